"""`mixdeploy export`: a MixNet (or your own model: FILE.onnx, pkg.module:factory) to ONNX (rewritten)
and TFLite fp32/fp16/int8, with a parity summary."""

from __future__ import annotations

from pathlib import Path

import click

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout, warn
from mixdeploy.commands._options import TimmStyleCommand, calibration_options, model_source_options
from mixdeploy.pipeline import ExportOptions, default_out_dir, precisions_from_flags, run_export


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@model_source_options
@click.option("--format", "fmt", type=click.Choice(["onnx", "tflite"]), default="tflite", show_default=True)
@click.option("--int8", is_flag=True, help="Also a full-integer int8 model (calibrated).")
@click.option("--fp16", is_flag=True, help="Also an fp16-weights model.")
@click.option("--dynamic-range", "dynamic", is_flag=True, help="Also a dynamic-range int8 model.")
@click.option("--int16x8", is_flag=True, help="Also a 16x8 model (int16 activations, int8 weights).")
@click.option("--io-dtype", type=click.Choice(["int8", "float32"]), default="int8", show_default=True,
              help="Input/output type of the full-integer models.")
@click.option("--keep-float", "keep_float", metavar="NODES",
              help="Comma-separated ONNX node names the int8 model computes in float (e.g. conv_stem,classifier "
                   "with --io-dtype float32: +0.2 to +0.8 points agreement at 224 px, docs/accuracy.md). "
                   "Needs --int8.")
@click.option("--input-layout", type=click.Choice(["nhwc", "nchw"]), default="nhwc", show_default=True)
@click.option("--lowering", type=click.Choice(["auto", "split", "pad", "decompose", "pad_decompose"]),
              default="auto", show_default=True,
              help="How each MixConv is lowered (auto: measured per layer on this runtime, cached).")
@click.option("--tuned-for", metavar="DEVICE",
              help="auto takes the lowerings `mixdeploy tune` measured on DEVICE (a phone model name or serial, "
                   "or host), for the precision chosen (int8 with --int8).")
@click.option("--tune-file", type=click.Path(exists=True, dir_okay=False),
              help="As --tuned-for, from this tune file.")
@calibration_options
@click.option("--parity-data", help="Data for the parity summary (default: the calibration source's test split).")
@click.option("--parity-count", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--opset", type=click.IntRange(min=17), default=17, show_default=True)
@click.option("--dynamic-batch", is_flag=True, help="ONNX with a dynamic batch dimension.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default: out/MODEL).")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON on stdout.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show each rewrite pass: what it touched, why it declined the rest.")
def export(model, int8, fp16, dynamic, int16x8, out_dir, as_json, verbose, **options):
    """Export MODEL to ONNX and TFLite.

    MODEL: a zoo name (mixnet-s, tf-mixnet-m, ...), timm:NAME, a checkpoint, an ONNX file
    (FILE.onnx: parity against onnxruntime on it) or pkg.module:factory (a function returning an
    nn.Module, called with --factory-kwargs).
    """
    from mixdeploy.views import export as view

    options["keep_float"] = keep_float_nodes(options["keep_float"], int8)
    options = ExportOptions(source=model, out_dir=Path(out_dir or default_out_dir(model)),
                            precisions=precisions_from_flags(int8, fp16, dynamic, int16x8), **options)
    with stage_progress(enabled=not as_json) as progress:
        result = run_export(options, progress=progress, warn=warn)
    if as_json:
        print_json(result.manifest)
        return
    view.show(result, stdout, notes_to=stderr, verbose=verbose)


def keep_float_nodes(spec: str | None, int8: bool) -> tuple[str, ...]:
    """--keep-float's node names; it only means something for the int8 model."""
    nodes = tuple(n.strip() for n in (spec or "").split(",") if n.strip())
    if spec is not None and not nodes:
        raise click.BadParameter("give node names, e.g. --keep-float conv_stem,classifier", param_hint="--keep-float")
    if nodes and not int8:
        raise click.UsageError("--keep-float selects layers of the int8 model: add --int8")
    return nodes
