"""`mixdeploy tune`: a TuneResult (mixdeploy.tune) as a per-layer table and an end-to-end table."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mixdeploy.onnx.lowering import LOWERINGS


def show(result, model: str, device: str, out: Console, notes_to: Console) -> None:
    out.print(layer_table(result))
    out.print(end_to_end_table(result))
    for note in result.notes:
        notes_to.print(f"[yellow]note:[/] {escape(note)}")
    notes_to.print(f"tuning saved to {result.tune_file}; use it with `mixdeploy export {escape(model)} "
                   f"--tuned-for {escape(device)}`" + (f"; chart: {result.chart}" if result.chart else ""))


def layer_table(result) -> Table:
    table = Table(title=f"Per MixConv layer on {escape(str(result.fingerprint['ro.product.model']))} "
                        f"({result.fingerprint['precision']}), ms")
    table.add_column("layer", no_wrap=True)
    table.add_column("kernels")
    for lowering in LOWERINGS:
        table.add_column(lowering, justify="right")
    table.add_column("choice")
    for layer in result.layers:
        cells = []
        for lowering in LOWERINGS:
            ms = layer.ms.get(lowering)
            text = "=" if ms is None else f"{ms:.3f}"       # "=": the same graph as a simpler lowering
            cells.append(f"[bold]{text}[/]" if lowering == layer.choice else text)
        table.add_row(escape(layer.name), ",".join(map(str, layer.kernels)), *cells,
                      layer.choice + (f" ({layer.note})" if layer.note else ""))
    return table


def end_to_end_table(result) -> Table:
    table = Table(title="End to end (median ms)")
    for column in ("model", "ms", "tuned speed-up"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, ms in result.end_to_end_ms.items():
        table.add_row(name, f"{ms:.3f}", f"{ms / result.end_to_end_ms['tuned']:.2f}x")
    return table
