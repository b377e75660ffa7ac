"""`mixdeploy profile FILE.tflite`: where the milliseconds go, per op and per op class, beside each
class's ceiling on this machine and the roofline (docs/bench.md, `profile`)."""

from __future__ import annotations

import click
from rich.markup import escape
from rich import box
from rich.table import Table

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Interleaved rounds (each times every op once).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Invokes back to back per sample of a single-op model (its data in cache).")
@click.option("--from-op-profile", "op_profile", type=click.Path(dir_okay=False),
              help="Instead of timing here: a phone's op profile, `mixdeploy bench PATH --device pixel "
                   "--op-profile --json` output (or benchmark_model's stdout).")
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True, help="Slowest ops listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON on stdout.")
def profile(path, threads, runs, warmup, repeat, op_profile, top, as_json):
    """Time each op of PATH alone (LiteRT/XNNPACK), sum per op class, and set each class's GMAC/s
    beside its ceiling on this machine (one of its ops, enlarged); the roofline beside the whole model."""
    from mixdeploy.bench.profile import load_op_profile, profile_host

    if op_profile:
        result = load_op_profile(op_profile, path)
    else:
        with stage_progress(not as_json) as progress:
            result = profile_host(path, threads=threads, runs=runs, warmup=warmup, repeat=repeat,
                                  progress=progress)
    if as_json:
        print_json(result.to_dict())
        return
    stdout.print(class_table(result))
    if top:
        stdout.print(op_table(result, top))
    stdout.print(summary_line(result))
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def class_table(result) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"{escape(result.model_path)}: per op class, {result.threads} thread(s)",
                  caption=escape(result.source) + "; ceiling: best GMAC/s of one op of the class alone "
                          "(its widest enlarged, or any); roofline: MACs / ceiling (ms)")
    for col in ("class", "ops", "ms", "MMAC", "GMAC/s", "ceiling", "of ceil", "roofline"):
        table.add_column(col, justify="left" if col == "class" else "right", no_wrap=col != "class",
                         min_width=16 if col == "class" else None)
    for c in result.classes:
        of_ceiling = c.gmacs / c.ceiling_gmacs if c.gmacs and c.ceiling_gmacs else None
        table.add_row(c.op_class, str(c.ops), f"{c.ms:.3f}",
                      _num(c.macs / 1e6 if c.macs else None, ".1f"), _num(c.gmacs, ".1f"),
                      _num(c.ceiling_gmacs, ".1f"), _num(of_ceiling, ".0%"), _num(c.roofline_ms, ".3f"))
    return table


def op_table(result, top: int) -> Table:
    table = Table(box=box.SIMPLE_HEAD, title=f"slowest {top} ops")
    for col in ("#", "op", "class", "ms", "GMAC/s", "name"):
        table.add_column(col, justify="right" if col in ("#", "ms", "GMAC/s") else "left", no_wrap=col != "name")
    for op in sorted(result.ops, key=lambda o: -o.ms)[:top]:
        table.add_row(str(op.index), op.op_name, op.op_class, f"{op.ms:.3f}", _num(op.gmacs, ".1f"),
                      escape(op.name[:70]))
    return table


def summary_line(result) -> str:
    parts = [f"whole model {_num(result.whole_ms, '.3f')} ms", f"sum of ops {result.sum_ops_ms:.3f} ms"]
    if result.whole_ms:
        parts.append(f"sum / whole {result.sum_ops_ms / result.whole_ms:.2f}")
    if result.roofline_ms:
        parts.append(f"roofline {result.roofline_ms:.3f} ms")
        if result.whole_ms:
            parts.append(f"whole / roofline {result.whole_ms / result.roofline_ms:.2f}x")
    if result.invoke_overhead_ms is not None:
        parts.append(f"(one invoke's cost, {result.invoke_overhead_ms * 1000:.1f} us, taken off each)")
    return ", ".join(parts)
