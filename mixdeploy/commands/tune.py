"""`mixdeploy tune`: choose each MixConv layer's lowering on the device that runs it (mixdeploy.tune)."""

from __future__ import annotations

from pathlib import Path

import click

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout, warn
from mixdeploy.commands._options import TimmStyleCommand, calibration_options, model_source_options


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@click.option("--device", required=True,
              help="host, or a phone: serial, model name substring (e.g. pixel), or android (the one attached).")
@click.option("--precision", type=click.Choice(["int8", "fp32"]), default="int8", show_default=True)
@model_source_options
@calibration_options
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
def tune(model, out_dir, as_json, **options):
    """Time every MixConv lowering of MODEL on DEVICE and keep, per layer, the fastest that holds parity.

    The choices are saved under the device's fingerprint; `mixdeploy export MODEL --tuned-for DEVICE`
    uses them."""
    from mixdeploy.tune import TuneOptions, run_tune
    from mixdeploy.views import tune as view

    options = TuneOptions(source=model, out_dir=Path(out_dir) if out_dir else None, **options)
    with stage_progress(enabled=not as_json) as progress:
        result = run_tune(options, progress=progress, warn=warn)
    if as_json:
        print_json(result.to_dict())
    else:
        view.show(result, model, options.device, stdout, notes_to=stderr)
