"""`mixdeploy export`: a MixNet (or your own model: FILE.onnx, pkg.module:factory) to ONNX (rewritten)
and TFLite fp32/fp16/int8, with a parity summary."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.commands._options import TimmStyleCommand, preprocessing_options
from mixdeploy.models.sources import parse_factory_kwargs
from mixdeploy.pipeline import ExportOptions, default_out_dir, run_export
from mixdeploy.tflite.recipe import RECIPES


def _precisions(int8: bool, fp16: bool, dynamic: bool, int16x8: bool) -> tuple[str, ...]:
    chosen = ["fp32"]  # the float TFLite is the reference the int8 model is judged against
    chosen += [name for name, on in (("fp16", fp16), ("dynamic", dynamic), ("int8", int8),
                                     ("int16x8", int16x8)) if on]
    return tuple(chosen)


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict or checkpoint file.")
@click.option("--factory-kwargs", help="""Keyword arguments for a pkg.module:factory MODEL, as a JSON object: '{"num_classes": 10}'.""")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier size (default: from weights or 1000).")
@preprocessing_options
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default="tflite", show_default=True)
@click.option("--int8", is_flag=True, help="Also a full-integer int8 model (calibrated).")
@click.option("--fp16", is_flag=True, help="Also an fp16-weights model.")
@click.option("--dynamic-range", "dynamic", is_flag=True, help="Also a dynamic-range int8 model.")
@click.option("--int16x8", is_flag=True, help="Also a 16x8 model (int16 activations, int8 weights).")
@click.option("--io-dtype", type=click.Choice(["int8", "float32"]), default="int8", show_default=True,
              help="Input/output type of the full-integer models.")
@click.option("--input-layout", type=click.Choice(["nhwc", "nchw"]), default="nhwc", show_default=True)
@click.option("--lowering", type=click.Choice(["auto", "split", "pad", "decompose", "pad_decompose"]),
              default="auto", show_default=True,
              help="How each MixConv is lowered (auto: measured per layer on this runtime, cached).")
@click.option("--tuned-for", metavar="DEVICE",
              help="auto takes the lowerings `mixdeploy tune` measured on DEVICE (a phone model name or serial, "
                   "or host), for the precision chosen (int8 with --int8).")
@click.option("--tune-file", type=click.Path(exists=True, dir_okay=False),
              help="As --tuned-for, from this tune file.")
@click.option("--calib", help="Calibration data: fashion-mnist, an image folder or a .npy.")
@click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--quant-recipe", type=click.Choice(list(RECIPES)), default="default", show_default=True,
              help="How int8 is calibrated and quantized (docs/accuracy.md compares them).")
@click.option("--parity-data", help="Data for the parity summary (default: the calibration source's test split).")
@click.option("--parity-count", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="ONNX with a dynamic batch dimension.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: out/MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
def export(model, weights, factory_kwargs, num_classes, preprocessing, fmt, int8, fp16, dynamic, int16x8, io_dtype,
           input_layout, lowering, tuned_for, tune_file, calib, calib_count, quant_recipe, parity_data, parity_count,
           opset, dynamic_batch, out_dir, as_json):
    """Export MODEL to ONNX and TFLite.

    MODEL: a zoo name (mixnet-s, tf-mixnet-m, ...), timm:NAME, a checkpoint, an ONNX file
    (FILE.onnx: parity against onnxruntime on it) or pkg.module:factory (a function returning an
    nn.Module, called with --factory-kwargs).
    """
    options = ExportOptions(
        source=model, out_dir=Path(out_dir or default_out_dir(model)),
        weights=weights, factory_kwargs=parse_factory_kwargs(factory_kwargs), num_classes=num_classes, preprocessing=preprocessing, fmt=fmt,
        precisions=_precisions(int8, fp16, dynamic, int16x8), lowering=lowering, calib=calib,
        calib_count=calib_count, quant_recipe=quant_recipe, io_dtype=io_dtype, input_layout=input_layout,
        parity_data=parity_data, parity_count=parity_count, opset=opset, dynamic_batch=dynamic_batch,
    )
    from mixdeploy.tune import record_tuning, tuned_export   # on use: it pulls in the lowering policy

    warn = lambda message: stderr.print(f"[yellow]warning:[/] {escape(message)}")
    with (stage_progress(enabled=not as_json) as progress,
          tuned_export(tuned_for, tune_file, lowering, options.precisions) as tuned):
        result = run_export(options, progress=progress, warn=warn)
    if tuned is not None:
        record_tuning(result, tuned)
        if not as_json:
            extra = f", {len(tuned.measured_here)} measured on this host" if tuned.measured_here else ""
            stderr.print(f"lowering tuned on {result.manifest['tuned']['fingerprint']['ro.product.model']}: "
                         f"{len(tuned.from_tune)} layer(s) from {tuned.source}{extra}")
    if as_json:
        print_json(result.manifest)
        return
    _print_files(result)
    _print_preprocessing(result.manifest)
    if "parity" in result.manifest:
        _print_parity(result.manifest["parity"])


def _print_files(result) -> None:
    model = result.manifest["model"]
    # the folder on its own line: a long path in the title would wrap
    stdout.print(escape(f"{model['name']}: files written to {result.out_dir}"), soft_wrap=True)
    table = Table(title=escape(f"{model['params'] / 1e6:.2f}M params, {model['macs'] / 1e6:.1f}M MACs"))
    for column in ("file", "size", "ops"):
        table.add_column(column)
    convert = result.manifest["stages"].get("convert", {})
    for record in result.manifest["files"]:
        ops = ""
        for facts in convert.values():
            if str(facts.get("path", "")).endswith(record["path"]):
                ops = _short_histogram(facts.get("op_histogram", {}))
        table.add_row(escape(record["path"]), f"{record['bytes'] / 1e6:.2f} MB", ops)
    stdout.print(table)


def _print_preprocessing(manifest: dict) -> None:
    from mixdeploy.preprocess import Preprocessing

    used = Preprocessing.from_dict(manifest["preprocessing"]).describe()
    by_source: dict[str, list[str]] = {}
    for name, source in manifest.get("preprocessing_sources", {}).items():
        by_source.setdefault(source, []).append(name)
    origin = "; ".join(f"{', '.join(names)} from {source}" for source, names in by_source.items())
    stdout.print(escape(f"preprocessing: {used} ({origin})"))


def _short_histogram(histogram: dict) -> str:
    top = sorted(histogram.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {count}" for name, count in top)


def _print_parity(parity: dict) -> None:
    reference = parity.get("reference", "pytorch")
    stdout.print(escape(f"parity data: {parity['data']}"), soft_wrap=True)
    table = Table(title=escape(f"Parity vs {reference} on {parity['images']} images"))
    table.add_column("model", no_wrap=True)
    for column in ("top-1", "top-1 agreement", "logit cosine", "max abs err", "SQNR dB"):
        table.add_column(column, justify="right")
    if "reference_top1" in parity:
        table.add_row(escape(reference), f"{parity['reference_top1']:.2%}", "", "", "", "")
    for name, m in parity["backends"].items():
        table.add_row(escape(name), _number(m.get("top1"), ".2%"), f"{m['top1_agreement']:.2%}",
                      f"{m['mean_cosine']:.4f}", _number(m.get("max_abs_error"), ".3g"), _number(m.get("sqnr_db"), ".1f"))
    stdout.print(table)


def _number(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)
