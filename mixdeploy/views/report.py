"""`mixdeploy report`: what was written, and each section's notes (what it left out and why)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape


def show(written, out: Console) -> None:
    plots = sum(len(s["plots"]) for s in written.sections)
    out.print(escape(f"report written to {written.html} ({plots} plots, {len(written.sections)} sections)"
                     + (f"; Markdown digest {written.markdown}" if written.markdown else "")))
    for section in written.sections:
        for note in section["notes"]:
            out.print(f"[dim]{escape(section['title'])}: {escape(note)}[/dim]", highlight=False)
