"""`mixdeploy tune`: choose each MixConv layer's lowering on the device that runs it (mixdeploy.tune)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.commands._options import TimmStyleCommand, preprocessing_options
from mixdeploy.models.sources import parse_factory_kwargs
from mixdeploy.onnx.lowering import LOWERINGS
from mixdeploy.tflite.recipe import RECIPES


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@click.option("--device", required=True,
              help="host, or a phone: serial, model name substring (e.g. pixel), or android (the one attached).")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), default="int8", show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict or checkpoint file.")
@click.option("--factory-kwargs", help="Keyword arguments for a pkg.module:factory MODEL, as a JSON object.")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier size (default: from weights or 1000).")
@preprocessing_options
@click.option("--calib", help="Calibration data (as for export): fashion-mnist, an image folder or a .npy.")
@click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--quant-recipe", type=click.Choice(list(RECIPES)), default="default", show_default=True)
@click.option("--parity-data", help="Inputs for the parity check of the chosen combination "
                                    "(default: the calibration source's test split).")
@click.option("--parity-count", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="Top-1 agreement the tuned model must keep: on the phone vs host LiteRT, and vs the split model.")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False),
              help="Android arm64 benchmark_model (else $MIXDEPLOY_BENCHMARK_MODEL or the config file).")
@click.option("--adb-server", metavar="HOST:PORT", help="The adb server the phone is attached to (adb -H/-P).")
@click.option("--threads", type=click.IntRange(min=1), help="Phone: threads (default: the device profile's).")
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True, help="Timed runs per model.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Phone: seconds before a device command is killed.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False),
              help="Keep the variants, tune.json and the bar chart tune.png here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def tune(model, device, precision, weights, factory_kwargs, num_classes, preprocessing, calib, calib_count,
         quant_recipe, parity_data, parity_count, min_agreement, benchmark_binary, adb_server, threads, runs,
         timeout_s, out_dir, as_json):
    """Time every MixConv lowering of MODEL on DEVICE and keep, per layer, the fastest that holds parity.

    The choices are saved under the device's fingerprint; `mixdeploy export MODEL --tuned-for DEVICE`
    uses them."""
    from mixdeploy.tune import TuneOptions, run_tune

    options = TuneOptions(source=model, device=device, precision=precision, weights=weights,
                          factory_kwargs=parse_factory_kwargs(factory_kwargs), num_classes=num_classes,
                          preprocessing=preprocessing, calib=calib, calib_count=calib_count,
                          quant_recipe=quant_recipe, parity_data=parity_data, parity_count=parity_count,
                          min_agreement=min_agreement, benchmark_binary=benchmark_binary, adb_server=adb_server,
                          threads=threads, runs=runs, timeout_s=timeout_s,
                          out_dir=Path(out_dir) if out_dir else None)
    warn = lambda message: stderr.print(f"[yellow]warning:[/] {escape(message)}")
    with stage_progress(enabled=not as_json) as progress:
        result = run_tune(options, progress=progress, warn=warn)
    if as_json:
        print_json(result.to_dict())
        return
    stdout.print(layer_table(result))
    stdout.print(end_to_end_table(result))
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
    stderr.print(f"tuning saved to {result.tune_file}; use it with `mixdeploy export {escape(model)} "
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
