"""`mixdeploy inspect FILE.tflite`: what is inside a TFLite model (ops, types, concat scales, slow kernels)."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from mixdeploy.commands._console import print_json, stdout


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout.")
@click.option("--all-concats", is_flag=True, help="List every CONCATENATION, not only mismatched ones.")
def inspect(path, as_json, all_concats):
    """Show the op histogram, tensor types, I/O, concat scales and large depthwise convs of PATH."""
    from mixdeploy.tflite.inspect import inspect_tflite

    result = inspect_tflite(path)
    if as_json:
        print_json(result.to_dict())
        return
    stdout.print(f"[bold]{escape(str(result.path))}[/]  {result.file_size / 1e6:.2f} MB, "
                 f"{sum(result.op_histogram.values())} ops, {result.transpose_count} TRANSPOSE")
    stdout.print(histogram_table("ops", result.op_histogram))
    stdout.print(histogram_table("tensor types", result.tensor_dtypes))
    stdout.print(io_table(result.inputs, result.outputs))
    if result.grouped_convs:
        stdout.print(f"{len(result.grouped_convs)} grouped CONV_2D (groups: "
                     f"{sorted({g['groups'] for g in result.grouped_convs})})")
    if result.large_depthwise:
        kernels = sorted({f"{d['kernel'][0]}x{d['kernel'][1]}" for d in result.large_depthwise})
        stdout.print(f"[yellow]{len(result.large_depthwise)} depthwise convs over 25 taps[/] ({', '.join(kernels)}): "
                     "off XNNPACK's fast depthwise path; consider `--lowering decompose`")
    concat = concat_table(result.concatenations, all_concats)
    if concat is not None:
        stdout.print(concat)


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


def concat_table(concats, show_all: bool) -> Table | None:
    quantized = [c for c in concats if c.output_scale is not None]
    rows = quantized if show_all else [c for c in quantized if c.mismatched]
    if not quantized:
        return None
    if not rows:
        stdout.print(f"CONCATENATION scales: all {len(quantized)} concats share one scale with their inputs")
        return None
    table = Table(title=f"CONCATENATION scales: {sum(c.mismatched for c in quantized)} of {len(quantized)} "
                        "with input scales != output scale (requantized inputs)")
    for col in ("output", "output scale", "input scales", "mismatch"):
        table.add_column(col)
    for c in rows:
        table.add_row(escape(c.output), f"{c.output_scale:.4g}",
                      ", ".join("-" if s is None else f"{s:.4g}" for s in c.input_scales),
                      "[red]yes[/]" if c.mismatched else "no")
    return table
