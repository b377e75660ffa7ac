"""`mixdeploy report`: one page per release, from what export, bench and parity wrote.

inputs.py    find and recognise manifest.json, bench / parity / blame JSON (by shape)
build.py     the sections: latency vs MACs, op profiles, parity, blame, graph, baseline
baseline.py  this release against an older one, flagged past a tolerance
plots.py     matplotlib figures as SVG; style.py the colour-blind-safe look they share
content.py   the report as data; html.py and markdown.py render it

Nothing here imports TensorFlow; matplotlib is imported when the first plot is drawn.
"""

from __future__ import annotations

from pathlib import Path

from mixdeploy.errors import MixdeployError, os_error_message


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
