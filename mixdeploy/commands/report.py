"""`mixdeploy report`: one self-contained HTML page (and a Markdown digest) from export folders and
bench / parity JSON, optionally against an older release."""

from __future__ import annotations

from pathlib import Path

import click

from mixdeploy.commands._console import print_json, stage_progress, stderr


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
    from mixdeploy.report import write_report
    from mixdeploy.report.baseline import Tolerances
    from mixdeploy.views import report as view

    with stage_progress(enabled=not no_progress and not as_json) as progress:
        written = write_report(inputs, html_path, markdown_path, html_url, baselines,
                               Tolerances(relative_tolerance, accuracy_tolerance), progress)
    if as_json:
        print_json(written.to_dict())
    else:
        view.show(written, stderr)
