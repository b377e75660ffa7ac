"""`mixdeploy parity`: PyTorch vs ONNX vs TFLite on a dataset, gated by thresholds (exit 1 on violation);
a failing int8 model's layers blamed and the fix they suggest verified (mixdeploy.gate)."""

from __future__ import annotations

import click
from rich.markup import escape

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.commands._options import TimmStyleCommand, preprocessing_options, threshold_options


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@click.option("--tflite", "tflite_paths", multiple=True, type=click.Path(dir_okay=False),
              help="TFLite model(s) to check (repeat the option).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="ONNX model to check too.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict or checkpoint file.")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier size (default: from the weights).")
@preprocessing_options
@click.option("--data", "data_source", required=True,
              help="fashion-mnist, an image folder (ImageFolder or flat), a list file (.txt: `path label` lines) or a .npy.")
@click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write parity.json, parity.md, parity-junit.xml (and blame.json) into this folder.")
@click.option("--report-link", default=None,
              help="Path or URL of the HTML report (`mixdeploy report`) that parity-junit.xml links to "
                   "(default: the parity.md beside it).")
@threshold_options
@click.option("--blame/--no-blame", default=True, show_default=True,
              help="Rank the layers of a failing int8 model by quantization error, then verify the fix it suggests.")
@click.option("--keep-float", "keep_float", default=None,
              help="The fix to verify: these ONNX nodes kept in float ('auto': blame's worst, even when the gate "
                   "passes). The fixed model is kept (in --report DIR, else beside the int8 model).")
@click.option("--calibration", default=None,
              help="Calibration images for blame/--keep-float (default: the training split of --data).")
@click.option("--calibration-count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--blame-images", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per runtime.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[auto|local|ADDRESS]",
              help="Run on a Ray cluster (pip install -e '.[ray]'): bare --ray or 'auto' joins the running one, "
                   "'local' starts one here, or give HOST:PORT / ray://HOST:10001. Workers read --data themselves.")
@click.option("--backend", default="host", show_default=True,
              help="Who runs the TFLite models: host (LiteRT here) or arm64[:CPU], the ARM64 twin "
                   "(LiteRT's aarch64 kernels under qemu; reports outputs that differ from the host's).")
@click.option("--no-progress", is_flag=True)
def parity(tflite_paths, as_json, no_progress, **request):
    """Check that TFLite (and ONNX) models compute what MODEL computes in PyTorch.

    Exit 0 when every backend meets every threshold, 1 when one does not, 2 for bad input.
    """
    from mixdeploy import gate
    from mixdeploy.views import parity as view

    request = gate.GateRequest(tflite_paths=list(tflite_paths), **request)
    with stage_progress(enabled=not no_progress and not as_json) as progress:
        outcome = gate.run_gate(request, progress, warn=lambda text: stderr.print(escape(text), style="yellow"))
    if as_json:
        print_json(outcome.result.to_dict())
    else:
        view.show(outcome, view.console_for(stdout))
    if not outcome.result.passed:
        click.get_current_context().exit(1)
