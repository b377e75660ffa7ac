"""The ONNX rewrite's pass report (RewriteReport.to_dict(), as the manifest keeps it): a table of
what each pass changed, and a line per pass that declined something, saying why (`export -v`)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

REASONS_SHOWN = 3   # per pass: a MixNet declines the same way for every layer; --json has them all


def show(report: dict, out: Console) -> None:
    out.print(rewrite_table(report))
    for line in declined_lines(report):
        out.print(escape(line), soft_wrap=True)


def rewrite_table(report: dict) -> Table:
    """One row per pass, op counts and MACs before -> after."""
    table = Table(title=f"ONNX rewrite (lowering={report['lowering']})")
    for col in ("pass", "touched", "nodes", "changed ops", "MACs (M)", "s"):
        table.add_column(col, justify="left" if col in ("pass", "changed ops") else "right")
    for p in report["passes"]:
        before, after = p["ops_before"], p["ops_after"]
        changed = [f"{op} {before.get(op, 0)}->{after.get(op, 0)}" for op in sorted(set(before) | set(after))
                   if before.get(op, 0) != after.get(op, 0)]
        table.add_row(p["name"], str(len(p["touched"])), f"{sum(before.values())}->{sum(after.values())}",
                      ", ".join(changed) or "-", f"{p['macs_before'] / 1e6:.1f}->{p['macs_after'] / 1e6:.1f}",
                      f"{p['seconds']:.2f}")
    return table


def declined_lines(report: dict) -> list[str]:
    """'PASS declined N: reason (node and K more); ...' for each pass that declined something, the
    first few distinct reasons (a report from before passes said why has none: no line)."""
    lines = []
    for p in report["passes"]:
        declined = p.get("declined") or []
        if not declined:
            continue
        by_reason: dict[str, list[str]] = {}
        for d in declined:
            by_reason.setdefault(d["reason"], []).append(d["node"])
        shown = [f"{reason} ({_nodes(nodes)})" if any(nodes) else reason
                 for reason, nodes in list(by_reason.items())[:REASONS_SHOWN]]
        if len(by_reason) > REASONS_SHOWN:
            shown.append(f"{len(by_reason) - REASONS_SHOWN} more reason(s) in manifest.json")
        lines.append(f"{p['name']} declined {len(declined)}: " + "; ".join(shown))
    return lines


def _nodes(nodes: list[str]) -> str:
    return nodes[0] if len(nodes) == 1 else f"{nodes[0]} and {len(nodes) - 1} more"
