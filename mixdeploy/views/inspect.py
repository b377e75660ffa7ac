"""`mixdeploy inspect`: a TfliteInspection (mixdeploy.tflite.inspect) as tables."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def show(result, all_concats: bool, out: Console) -> None:
    out.print(f"[bold]{escape(str(result.path))}[/]  {result.file_size / 1e6:.2f} MB, "
              f"{sum(result.op_histogram.values())} ops, {result.transpose_count} TRANSPOSE")
    out.print(histogram_table("ops", result.op_histogram))
    out.print(histogram_table("tensor types", result.tensor_dtypes))
    out.print(io_table(result.inputs, result.outputs))
    if result.grouped_convs:
        out.print(f"{len(result.grouped_convs)} grouped CONV_2D (groups: "
                  f"{sorted({g['groups'] for g in result.grouped_convs})})")
    if result.large_depthwise:
        kernels = sorted({f"{d['kernel'][0]}x{d['kernel'][1]}" for d in result.large_depthwise})
        out.print(f"[yellow]{len(result.large_depthwise)} depthwise convs over 25 taps[/] ({', '.join(kernels)}): "
                  "off XNNPACK's fast depthwise path; consider `--lowering decompose`")
    show_concats(result.concatenations, all_concats, out)


def histogram_table(title: str, histogram: dict[str, int]) -> Table:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("count", justify="right")
    for name, count in histogram.items():
        table.add_row(escape(name), str(count))
    return table


def io_table(inputs: list[dict], outputs: list[dict]) -> Table:
    table = Table(title="inputs / outputs")
    for col in ("", "name", "shape", "dtype", "scale", "zero point"):
        table.add_column(col)
    for kind, details in (("in", inputs), ("out", outputs)):
        for d in details:
            table.add_row(kind, escape(d["name"]), escape(str(d["shape"])), d["dtype"],
                          "" if d["scale"] is None else f"{d['scale']:.6g}",
                          "" if d["zero_point"] is None else str(d["zero_point"]))
    return table


def show_concats(concats, show_all: bool, out: Console) -> None:
    """The quantized CONCATENATIONs: a table of those whose inputs are requantized (all with
    show_all), or one line when every concat shares its inputs' scale."""
    quantized = [c for c in concats if c.output_scale is not None]
    if not quantized:
        return
    rows = quantized if show_all else [c for c in quantized if c.mismatched]
    if not rows:
        out.print(f"CONCATENATION scales: all {len(quantized)} concats share one scale with their inputs")
        return
    table = Table(title=f"CONCATENATION scales: {sum(c.mismatched for c in quantized)} of {len(quantized)} "
                        "with input scales != output scale (requantized inputs)")
    for col in ("output", "output scale", "input scales", "mismatch"):
        table.add_column(col)
    for c in rows:
        table.add_row(escape(c.output), f"{c.output_scale:.4g}",
                      ", ".join("-" if s is None else f"{s:.4g}" for s in c.input_scales),
                      "[red]yes[/]" if c.mismatched else "no")
    out.print(table)
