"""`mixdeploy bench`: latency of .tflite files on this host (LiteRT) or on Android phones (adb);
on-device parity on a phone or on the ARM64 twin (`--device arm64[:CPU]`, no latency).
The work is mixdeploy.bench.targets.run_bench; what it prints, mixdeploy.views.bench."""

from __future__ import annotations

import click

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout


def _thread_list(value: str) -> list[int]:
    try:
        threads = [int(t) for t in value.split(",") if t.strip()]
    except ValueError:
        threads = []
    if not threads or min(threads) < 1:
        raise click.BadParameter("give thread counts as a comma-separated list, e.g. 1,2,4")
    return threads


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--device", default="host", show_default=True,
              help="host, or an Android device: serial, model name substring (e.g. pixel), `all`, "
                   "or `android` (the one attached / ANDROID_SERIAL), or arm64[:CPU]: the ARM64 twin "
                   "(phone CPU kernels under qemu, parity only; CPU default cortex-a76).")
@click.option("--threads", default=None, help="Thread counts, comma-separated (host default 1,2; "
                                              "phone: the first one; default from the device profile).")
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--no-xnnpack", is_flag=True, help="Host: LiteRT builtin kernels only (no XNNPACK).")
@click.option("--baseline", "baselines", multiple=True, type=click.Choice(["onnxruntime", "torch"]),
              help="Host: also time the same network in onnxruntime / PyTorch.")
@click.option("--onnx", "onnx_path", type=click.Path(exists=True, dir_okay=False),
              help="ONNX model for --baseline onnxruntime (default: model.opt.onnx beside the tflite).")
@click.option("--torch-model", help="Model for --baseline torch (mixnet-s, timm:NAME, ...).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Weights for --torch-model.")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False),
              help="Android arm64 benchmark_model (else $MIXDEPLOY_BENCHMARK_MODEL or "
                   "~/.config/mixdeploy/config.toml benchmark_binary).")
@click.option("--delegate", type=click.Choice(["xnnpack", "cpu", "gpu", "nnapi"]), default="xnnpack",
              show_default=True, help="Phone: delegate for benchmark_model (cpu = builtin kernels).")
@click.option("--op-profile", is_flag=True, help="Phone: per-op profile; flags depthwise convs off XNNPACK's fast path.")
@click.option("--parity", is_flag=True, help="Phone / arm64: run inputs on the device and compare with host LiteRT.")
@click.option("--parity-data", default="fashion-mnist", show_default=True,
              help="Inputs for --parity: a .npy (NCHW float32, preprocessed) or a data source.")
@click.option("--parity-count", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Phone: seconds before a device command is killed.")
@click.option("--adb-server", "adb_servers", multiple=True, metavar="HOST:PORT",
              help="Phone: an adb server with phones attached (adb -H/-P; repeatable). Several servers "
                   "run in parallel; default: the local server.")
@click.option("--keep-on-device", is_flag=True,
              help="Phone: keep the models in the phone's cache (bounded, oldest out) instead of removing them after the run.")
@click.option("--device-cache-mb", type=click.IntRange(min=1), default=256, show_default=True,
              help="Phone: size bound of that cache (with --keep-on-device).")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write a latency-vs-MACs plot (PNG) here.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout.")
def bench(threads, as_json, **flags):
    """Benchmark FILES (.tflite) on the host or on Android phones over adb.

    `--device all` (or several --adb-server) runs a fleet: every phone is reported, one that fails
    is a row of its own, and the exit code is 1 if any failed."""
    from mixdeploy.views.bench import BenchShow
    from mixdeploy.bench.targets import BenchRequest, run_bench

    request = BenchRequest(threads=_thread_list(threads) if threads else None, **flags)
    show = BenchShow(stdout, stderr, quiet=as_json, progress=stage_progress)
    outcome = run_bench(request, show)
    if as_json:
        print_json(outcome.to_json())
    else:
        show.summary(outcome)
    show.failures(outcome.failures)
    if outcome.failures:
        click.get_current_context().exit(1)
