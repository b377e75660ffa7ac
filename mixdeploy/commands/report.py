"""`mixdeploy report`: one self-contained HTML page (and a Markdown digest) from export folders and
bench / parity JSON, optionally against an older release."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.markup import escape

from mixdeploy.commands._console import print_json, stage_progress, stderr
from mixdeploy.errors import MixdeployError


@click.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--out", "html_path", type=click.Path(path_type=Path), default=Path("report.html"),
              show_default=True, help="The HTML report to write.")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path),
              help="Also write a Markdown digest here (tables; plots as links into the HTML).")
@click.option("--html-url", help="Where the Markdown should link the HTML to (a CI artifact URL); "
                                 "default: its path relative to the Markdown file.")
@click.option("--baseline", "baselines", multiple=True, type=click.Path(path_type=Path),
              help="An older release's folder (or JSON files; repeatable) to compare against.")
@click.option("--relative-tolerance", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="Flag latency and file-size changes over this many percent.")
@click.option("--accuracy-tolerance", type=click.FloatRange(min=0), default=0.1, show_default=True,
              help="Flag top-1 agreement / accuracy changes over this many points.")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
@click.option("--no-progress", is_flag=True)
def report(inputs, html_path, markdown_path, html_url, baselines, relative_tolerance, accuracy_tolerance,
           as_json, no_progress):
    """Write one HTML page about a release from INPUTS: export folders (manifest.json), the JSON of
    `mixdeploy bench --json` and `mixdeploy parity --json`, or `parity --report` folders.

    Missing pieces are left out with a note. Exit 0 when the report is written, 2 for bad input.
    """
    from importlib import metadata

    from mixdeploy.report import check_output_path, write_outputs
    from mixdeploy.report.baseline import Tolerances
    from mixdeploy.report.build import build_report
    from mixdeploy.report.content import Note
    from mixdeploy.report.html import render_html
    from mixdeploy.report.inputs import collect
    from mixdeploy.report.markdown import render_markdown

    check_output_path(html_path, "-o")
    if markdown_path is not None:
        check_output_path(markdown_path, "--markdown")
        if markdown_path.resolve() == html_path.resolve():
            raise MixdeployError("--markdown and -o name the same file: give them different names")
    with stage_progress(enabled=not no_progress and not as_json) as progress:
        progress("read inputs", 0, 1)
        current = collect(inputs)
        old = collect(baselines, what="--baseline") if baselines else None
        progress("draw plots", 0, 1)
        built = build_report(current, old, Tolerances(relative_tolerance, accuracy_tolerance),
                             baseline_name=", ".join(map(str, baselines)) or None,
                             version=metadata.version("mixdeploy"))
        progress("write", 0, 1)
        files = {html_path: render_html(built)}
        if markdown_path is not None:
            link = html_url or os.path.relpath(html_path.resolve(), markdown_path.resolve().parent)
            files[markdown_path] = render_markdown(built, link)
        write_outputs(files)
        progress("write", 1, 1)

    sections = [{"id": s.id, "title": s.title, "plots": [p.name for p in s.plots],
                 "notes": [b.text for b in s.blocks if isinstance(b, Note)]} for s in built.sections]
    if as_json:
        print_json({"html": str(html_path), "markdown": str(markdown_path) if markdown_path else None,
                    "sections": sections})
        return
    plots = sum(len(s["plots"]) for s in sections)
    stderr.print(escape(f"report written to {html_path} ({plots} plots, {len(sections)} sections)"
                        + (f"; Markdown digest {markdown_path}" if markdown_path else "")))
    for section in sections:
        for note in section["notes"]:
            stderr.print(f"[dim]{escape(section['title'])}: {escape(note)}[/dim]", highlight=False)
