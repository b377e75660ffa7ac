"""`mixdeploy profile`: a ProfileResult (mixdeploy.bench.profile) as tables and a summary line."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mixdeploy.views import dash_or


def show(result, top: int, out: Console, notes_to: Console) -> None:
    out.print(class_table(result))
    if top:
        out.print(op_table(result, top))
    out.print(summary_line(result))
    for note in result.notes:
        notes_to.print(f"[yellow]note:[/] {escape(note)}")


def class_table(result) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"{escape(result.model_path)}: per op class, {result.threads} thread(s)",
                  caption=escape(result.source) + "; ceiling: best GMAC/s of one op of the class alone "
                          "(its widest enlarged, or any); roofline: MACs / ceiling (ms); data floor: bytes "
                          "of the ops without MACs / the best GB/s one of them reached (ms)")
    for col in ("class", "ops", "ms", "MMAC", "GMAC/s", "ceiling", "of ceil", "roofline", "data floor"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=col != "class",
                         min_width=16 if col == "class" else None)
    for c in result.classes:
        of_ceiling = c.gmacs / c.ceiling_gmacs if c.gmacs and c.ceiling_gmacs else None
        table.add_row(c.op_class, str(c.ops), f"{c.ms:.3f}",
                      dash_or(c.macs / 1e6 if c.macs else None, ".1f"), dash_or(c.gmacs, ".1f"),
                      dash_or(c.ceiling_gmacs, ".1f"), dash_or(of_ceiling, ".0%"), dash_or(c.roofline_ms, ".3f"),
                      dash_or(c.data_floor_ms, ".3f"))
    return table


def op_table(result, top: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"slowest {top} ops")
    for col in ("#", "op", "class", "ms", "GMAC/s", "GB/s", "name"):
        table.add_column(col, justify="right" if col in ("#", "ms", "GMAC/s", "GB/s") else "left",
                         no_wrap=col != "name")
    for op in sorted(result.ops, key=lambda o: -o.ms)[:top]:
        table.add_row(str(op.index), op.op_name, op.op_class, f"{op.ms:.3f}", dash_or(op.gmacs, ".1f"),
                      dash_or(op.gbs, ".1f"), escape(op.name[:70]))
    return table


def summary_line(result) -> str:
    parts = [f"whole model {dash_or(result.whole_ms, '.3f')} ms", f"sum of ops {result.sum_ops_ms:.3f} ms"]
    if result.whole_ms:
        parts.append(f"sum / whole {result.sum_ops_ms / result.whole_ms:.2f}")
    if result.roofline_ms:
        parts.append(f"roofline {result.roofline_ms:.3f} ms")
        if result.whole_ms:
            parts.append(f"whole / roofline {result.whole_ms / result.roofline_ms:.2f}x")
    if result.floor_ms:
        parts.append(f"data floor {result.data_floor_ms:.3f} ms at {result.bandwidth_gbs:.1f} GB/s "
                     f"({result.bandwidth_op})")
        if result.whole_ms:
            parts.append(f"whole / (roofline + data floor) {result.whole_ms / result.floor_ms:.2f}x")
    if result.invoke_overhead_ms is not None:
        parts.append(f"(one invoke's cost, {result.invoke_overhead_ms * 1000:.1f} us, taken off each)")
    return ", ".join(parts)
