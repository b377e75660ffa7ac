"""`mixdeploy parity`: a GateOutcome (mixdeploy.gate) as the parity table, the violations, the
blame table and the verified fix, ending in PASS or FAIL."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from mixdeploy import parity

LOG_WIDTH = 160  # CI logs are not terminals: rich would wrap the table at 80 columns


def console_for(terminal: Console) -> Console:
    """`terminal` when stdout is one, else a console as wide as a CI log."""
    return terminal if sys.stdout.isatty() else Console(width=LOG_WIDTH)


def show(outcome, out: Console) -> None:
    result = outcome.result
    out.print(escape(parity.describe_data(result)), soft_wrap=True)
    out.print(parity.rich_table(result))
    if result.cluster:
        out.print(escape(f"ray: {parity.cluster_summary(result.cluster)}"))
    for m in result.backends:
        if m.vs_host_litert:
            out.print(escape(f"{m.backend}: {parity.describe_vs_host(m.vs_host_litert)}"))
    for check in result.violations:
        out.print(f"[red]FAIL[/red] {escape(check.backend)}: {escape(check.message)}")
    if outcome.blame is not None:
        out.print(outcome.blame.rich_table())
    if outcome.fix is not None:   # the blame report ends in the fix it verified
        fix = outcome.fix
        where = f" -> {fix.path}" if fix.kept else " (the fixed model is not kept: add --report DIR)"
        out.print(("[green]verified fix[/green] " if fix.passed else "[red]fix tried, gate still fails[/red] ")
                  + escape(fix.summary() + where), soft_wrap=True)
    out.print("[green]parity: PASS[/green]" if result.passed else "[red]parity: FAIL[/red]")
