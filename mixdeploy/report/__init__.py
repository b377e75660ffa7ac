"""`mixdeploy report`: one page per release, from what export, bench and parity wrote.

inputs.py    find and recognise manifest.json, bench / parity / blame JSON (by shape)
build.py     the sections: latency vs MACs, op profiles, parity, blame, graph, baseline
baseline.py  this release against an older one, flagged past a tolerance
plots.py     matplotlib figures as SVG; style.py the colour-blind-safe look they share
content.py   the report as data; html.py and markdown.py render it

Nothing here imports TensorFlow; matplotlib is imported when the first plot is drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from mixdeploy.errors import MixdeployError, os_error_message


@dataclass
class WrittenReport:
    """What `write_report` wrote: the files and, per section, its plots and notes (what was left out)."""

    html: Path
    markdown: Path | None
    sections: list[dict]

    def to_dict(self) -> dict:
        return {"html": str(self.html), "markdown": str(self.markdown) if self.markdown else None,
                "sections": self.sections}


def write_report(inputs: Sequence[Path], html_path: Path, markdown_path: Path | None = None,
                 html_url: str | None = None, baselines: Sequence[Path] = (), tolerances=None,
                 progress: Callable[[str, int, int], None] = lambda *a: None) -> WrittenReport:
    """Read `inputs` (and `baselines`), build the sections, write the HTML page (and the Markdown
    digest, linking the HTML as `html_url` or by its relative path): both files or neither."""
    from importlib import metadata

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
    progress("read inputs", 0, 1)
    current = collect(inputs)
    old = collect(baselines, what="--baseline") if baselines else None
    progress("draw plots", 0, 1)
    built = build_report(current, old, tolerances or Tolerances(),
                         baseline_name=", ".join(map(str, baselines)) or None, version=metadata.version("mixdeploy"))
    progress("write", 0, 1)
    files = {html_path: render_html(built)}
    if markdown_path is not None:
        link = html_url or os.path.relpath(html_path.resolve(), markdown_path.resolve().parent)
        files[markdown_path] = render_markdown(built, link)
    write_outputs(files)
    progress("write", 1, 1)
    sections = [{"id": s.id, "title": s.title, "plots": [p.name for p in s.plots],
                 "notes": [b.text for b in s.blocks if isinstance(b, Note)]} for s in built.sections]
    return WrittenReport(html_path, markdown_path, sections)


def check_output_path(path: Path, what: str) -> None:
    """Refuse an output path that cannot be a file before any work is done."""
    from mixdeploy.atomic import check_output_file

    check_output_file(path, what)


def write_outputs(files: dict[Path, str]) -> None:
    """Write every file or none: each goes to a temporary name first, renamed once all are written."""
    import contextlib

    from mixdeploy.atomic import atomic_path

    try:
        with contextlib.ExitStack() as stack:
            for path, text in files.items():
                stack.enter_context(atomic_path(path)).write_text(text, encoding="utf-8")
    except OSError as err:
        raise MixdeployError(f"could not write the report: {os_error_message(err)}") from None
