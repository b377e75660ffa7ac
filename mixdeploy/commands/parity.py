"""`mixdeploy parity`: PyTorch vs ONNX vs TFLite on a dataset, gated by thresholds (exit 1 on violation).

When an int8 model misses a threshold, `--blame` (default) ranks its layers by int8 error and
ends in a verified fix: the worst layers kept in float, converted again, checked on the same
images and timed against the int8 model (mixdeploy.gate). `--keep-float auto|NODE,...` asks for
that fix even when the gate passes.
"""

from __future__ import annotations

import click
from rich.markup import escape

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.commands._options import TimmStyleCommand, preprocessing_options
from mixdeploy.errors import MixdeployError

LOG_WIDTH = 160  # CI logs are not terminals: rich would wrap the table at 80 columns


def _console():
    import sys

    from rich.console import Console

    return stdout if sys.stdout.isatty() else Console(width=LOG_WIDTH)


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
@click.option("--min-top1-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True)
@click.option("--max-top1-drop", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Points.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, help="Mean logit cosine.")
@click.option("--min-sqnr-db", type=float, default=None, help="Logit SQNR in dB.")
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
def parity(model, tflite_paths, onnx_path, weights, num_classes, preprocessing, data_source, limit, as_json, report_dir,
           report_link, min_top1_agreement, max_top1_drop, min_cosine, min_sqnr_db, blame, keep_float, calibration,
           calibration_count, blame_images, batch_size, threads, ray_address, backend, no_progress):
    """Check that TFLite (and ONNX) models compute what MODEL computes in PyTorch.

    Exit 0 when every backend meets every threshold, 1 when one does not, 2 for bad input.
    """
    from mixdeploy import gate
    from mixdeploy.parity import Thresholds

    if report_link and not report_dir:
        raise MixdeployError("--report-link names the report that parity-junit.xml links to: add --report DIR")
    request = gate.GateRequest(
        model=model, tflite_paths=list(tflite_paths), onnx_path=onnx_path, weights=weights, num_classes=num_classes,
        preprocessing=preprocessing, data_source=data_source, limit=limit,
        thresholds=Thresholds(min_top1_agreement=min_top1_agreement, max_top1_drop=max_top1_drop,
                              min_cosine=min_cosine, min_sqnr_db=min_sqnr_db),
        blame=blame, keep_float=keep_float, calibration=calibration, calibration_count=calibration_count,
        blame_images=blame_images, batch_size=batch_size, threads=threads, ray_address=ray_address,
        backend=backend, fix_dir=report_dir)
    with stage_progress(enabled=not no_progress and not as_json) as progress:
        outcome = gate.run_gate(request, progress, warn=lambda text: stderr.print(escape(text), style="yellow"))
    if report_dir:
        gate.write_reports(outcome, report_dir, report_link)
    if as_json:
        print_json(outcome.result.to_dict())
    else:
        _print(outcome)
    if not outcome.result.passed:
        click.get_current_context().exit(1)


def _print(outcome) -> None:
    from mixdeploy import parity as parity_lib

    result, out = outcome.result, _console()
    out.print(escape(parity_lib.describe_data(result)), soft_wrap=True)
    out.print(parity_lib.rich_table(result))
    if result.cluster:
        out.print(escape(f"ray: {parity_lib.cluster_summary(result.cluster)}"))
    for m in result.backends:
        if m.vs_host_litert:
            out.print(escape(f"{m.backend}: {parity_lib.describe_vs_host(m.vs_host_litert)}"))
    for check in result.violations:
        out.print(f"[red]FAIL[/red] {escape(check.backend)}: {escape(check.message)}")
    if outcome.blame is not None:
        out.print(outcome.blame.rich_table())
    if outcome.fix is not None:   # the blame report ends in the fix it verified
        fix = outcome.fix
        where = f" -> {fix.path}" if fix.kept else " (the fixed model is not kept: add --report DIR)"
        out.print(("[green]verified fix[/green] " if fix.passed else "[red]fix tried, gate still fails[/red] ")
                  + escape(fix.summary() + where), soft_wrap=True)
    out.print("[green]parity: PASS[/green]" if result.passed else "[red]parity: FAIL[/red]")
