"""`mixdeploy bench`: latency of .tflite files on this host (LiteRT) or on Android phones (adb);
on-device parity on a phone or on the ARM64 twin (`--device arm64[:CPU]`, no latency)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.errors import MixdeployError


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
def bench(files, device, threads, runs, warmup, no_xnnpack, baselines, onnx_path, torch_model, weights,
          benchmark_binary, delegate, op_profile, parity, parity_data, parity_count, timeout_s, adb_servers,
          keep_on_device, device_cache_mb, plot, as_json):
    """Benchmark FILES (.tflite) on the host or on Android phones over adb.

    `--device all` (or several --adb-server) runs a fleet: every phone is reported, one that fails
    is a row of its own, and the exit code is 1 if any failed."""
    from mixdeploy.bench import report

    thread_counts = _thread_list(threads) if threads else None
    from mixdeploy.bench import twin

    twin_cpu = twin.parse_device(device)
    if twin_cpu:
        _bench_on_twin(files, twin_cpu, (thread_counts or [1])[0], parity, parity_data, parity_count,
                       torch_model, weights, timeout_s, as_json, unsupported={"--no-xnnpack": no_xnnpack, "--baseline": baselines,
                                             "--op-profile": op_profile, "--benchmark-binary": benchmark_binary,
                                             "--plot": plot, "--delegate": delegate != "xnnpack",
                                             "--adb-server": adb_servers, "--keep-on-device": keep_on_device})
        return
    _check_flags_fit_target(device, no_xnnpack=no_xnnpack, baselines=baselines, op_profile=op_profile,
                            parity=parity, benchmark_binary=benchmark_binary, adb_servers=adb_servers,
                            keep_on_device=keep_on_device)
    if plot:
        _check_plot_path(plot, files)
    failures = []
    if device == "host":
        results, rows = _bench_on_host(files, thread_counts or [1, 2], runs, warmup, not no_xnnpack,
                                       baselines, onnx_path, torch_model, weights, as_json)
    else:
        from mixdeploy.bench.phone import RunOptions

        options = RunOptions(threads=thread_counts[0] if thread_counts else None, delegate=delegate,
                             op_profile=op_profile, runs=runs, warmup=warmup, timeout_s=timeout_s,
                             keep_on_device=keep_on_device, device_cache_mb=device_cache_mb)
        results, rows, failures = _bench_on_phones(files, device, list(adb_servers), options, benchmark_binary,
                                                   parity, parity_data, parity_count, as_json)
    if plot and rows:
        report.plot_latency_vs_macs(rows, plot)
    if as_json:
        print_json({"results": results, "failures": [f.to_dict() for f in failures],
                    "table": [r.to_dict() for r in rows], "mac_budget": report.MAC_BUDGET, "plot": plot})
    else:
        stdout.print(report.latency_table(rows, failures=failures))
        if plot and rows:
            stderr.print(escape(f"plot written to {plot}"))
    if failures:
        stderr.print(f"[red]{len(failures)} run(s) failed[/]: " + "; ".join(
            escape(f"{f.server}/{f.serial}: {f.error.strip().splitlines()[0] if f.error.strip() else 'failed'}")
            for f in failures))
        click.get_current_context().exit(1)


def _check_plot_path(plot: str, files) -> None:
    """--plot is checked before the benchmark, not after it (when the timings would be lost):
    a writable path, a format matplotlib writes, and models whose MACs are known."""
    from mixdeploy.atomic import check_output_file
    from mixdeploy.bench import report
    from mixdeploy.report.style import pyplot

    check_output_file(plot, "--plot")
    if not any(report.macs_for(path) for path in files):
        raise MixdeployError("--plot draws latency against MACs, and no MACs are known for these models: bench "
                             "files from `mixdeploy export` (their manifest.json has the MACs), or drop --plot")
    suffix = Path(plot).suffix.lstrip(".").lower() or "png"
    figure = pyplot().figure()
    supported = figure.canvas.get_supported_filetypes()
    pyplot().close(figure)
    if suffix not in supported:
        raise MixdeployError(f"--plot {plot}: cannot write .{suffix} files; name a .png, .svg or .pdf file "
                             "(e.g. latency.png)")


def _check_flags_fit_target(device: str, **flags) -> None:
    """A flag for the other target would be silently ignored: say so instead."""
    host_only = {"no_xnnpack": "--no-xnnpack (on a phone use --delegate cpu)", "baselines": "--baseline"}
    phone_only = {"op_profile": "--op-profile", "parity": "--parity", "benchmark_binary": "--benchmark-binary",
                  "adb_servers": "--adb-server", "keep_on_device": "--keep-on-device"}
    wrong = host_only if device != "host" else phone_only
    used = [name for key, name in wrong.items() if flags.get(key)]
    if used:
        where = "the host" if device != "host" else "a phone (--device MODEL|SERIAL|all)"
        raise MixdeployError(f"{', '.join(used)} only applies to {where}")


# --- host ----------------------------------------------------------------------------------------

def _bench_on_host(files, threads, runs, warmup, use_xnnpack, baselines, onnx_path, torch_model,
                   weights, quiet):
    from mixdeploy.artifacts import ExportFolder
    from mixdeploy.bench import report
    from mixdeploy.bench.host import bench_host

    torch_module = _load_torch_module(torch_model, weights) if "torch" in baselines else None
    results, rows = [], []
    for path in files:
        onnx_for_file = onnx_path or ExportFolder.beside(path).onnx() if "onnxruntime" in baselines else None
        if not quiet:
            stderr.print(escape(f"benchmarking {path} on the host ({runs} runs x {len(threads)} thread settings)"))
        result = bench_host(path, threads=threads, runs=runs, warmup=warmup, use_xnnpack=use_xnnpack,
                            baselines=baselines, onnx_path=onnx_for_file, torch_module=torch_module)
        results.append(result.to_dict())
        rows += report.rows_from_host(result)
    return results, rows


def _load_torch_module(name: str | None, weights: str | None):
    if not name:
        raise MixdeployError("--baseline torch needs --torch-model NAME (e.g. mixnet-s, timm:mixnet_s)")
    from mixdeploy.models import load_model

    return load_model(name, weights=weights).module


# --- phones --------------------------------------------------------------------------------------

def _bench_on_phones(files, device, servers, options, benchmark_binary, parity, parity_data, parity_count, quiet):
    """One phone (the first fault stops the run), or a fleet (`all`, several servers): every phone
    reported, failures as rows."""
    from dataclasses import replace

    from mixdeploy.bench import fleet, report
    from mixdeploy.bench.adb import Adb
    from mixdeploy.bench.phone import PhoneFailure, bench_phone

    results, rows, failures = [], [], []

    def record(outcome) -> None:
        if isinstance(outcome, PhoneFailure):
            failures.append(outcome)
            return
        results.append(outcome.to_dict())
        rows.extend(report.rows_from_phone(outcome))
        if not quiet:
            _print_phone_details(outcome)

    from mixdeploy.bench.inputs import parity_images

    as_fleet = device == "all" or len(servers) > 1
    for path in files:
        run = replace(options, parity_inputs=parity_images(path, parity_data, parity_count).images if parity else None)
        if not quiet:
            where = f" via {', '.join(servers)}" if servers else ""
            stderr.print(escape(f"benchmarking {path} on {device}{where} over adb"))
        if as_fleet:
            for outcome in fleet.bench_fleet([path], device, servers, benchmark_binary, run,
                                             on_done=None if quiet else _print_progress):
                record(outcome)
            continue
        adb = Adb(server=servers[0] if servers else None)
        for result in bench_phone(path, device=device, benchmark_binary=benchmark_binary, threads=run.threads,
                                  delegate=run.delegate, op_profile=run.op_profile,
                                  parity_inputs=run.parity_inputs, runs=run.runs, warmup=run.warmup,
                                  timeout_s=run.timeout_s, adb=adb, keep_on_device=run.keep_on_device,
                                  device_cache_mb=run.device_cache_mb):
            record(result)
    return results, rows, failures


def _print_progress(outcome) -> None:
    """A fleet phone finished (called from its server's thread)."""
    from mixdeploy.bench.phone import PhoneFailure

    if isinstance(outcome, PhoneFailure):
        stderr.print(f"[red]failed[/] {escape(outcome.server)}/{escape(outcome.serial)}: "
                     f"{escape(outcome.error.strip().splitlines()[0] if outcome.error.strip() else '')}")
    else:
        stderr.print(f"done {escape(outcome.server)}/{escape(outcome.device.serial)}: median "
                     f"{outcome.median_ms:.3f} ms")


def _print_phone_details(result) -> None:
    state = result.device
    stderr.print(f"[bold]{escape(str(state.model))}[/] ({escape(result.server)}/{escape(str(state.serial))}) Android {state.android_version}, SoC "
                 f"{state.soc or state.board_platform}, battery {state.battery_level}%, thermal status "
                 f"{state.thermal_status}; pushed: "
                 + ", ".join(f"{k} ({'pushed' if v else 'cached'})" for k, v in result.pushed.items()))
    from mixdeploy.bench.cpus import format_cpus

    online = format_cpus(result.online_cpus) if result.online_cpus else "unknown"
    stderr.print(f"{result.threads} thread(s), " + (f"pinned with taskset {result.cpu_mask}" if result.cpu_mask
                                                    else "unpinned") + f"; CPUs online: {online}")
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
    if result.benchmark.op_profile:
        from rich.table import Table

        table = Table(title="per-op profile (top 15 by avg ms)")
        for column in ("node type", "avg ms", "%", "name"):
            table.add_column(column)
        for row in sorted(result.benchmark.op_profile, key=lambda r: -r.avg_ms)[:15]:
            # Names like `[conv_stem]:0` would be read as rich markup: escape them.
            table.add_row(escape(row.node_type), f"{row.avg_ms:.3f}",
                          f"{row.percent:.1f}" if row.percent is not None else "-", escape(row.name))
        stdout.print(table)
    for slow in result.slow_depthwise:
        stderr.print(f"[red]slow depthwise[/] {escape(slow.layer or slow.name)} {slow.kernel[0]}x{slow.kernel[1]} "
                     f"ran as {escape(slow.node_type)} ({slow.avg_ms:.3f} ms): consider --lowering decompose")
    if result.parity:
        p = result.parity
        diff = p.output_difference
        steps = f", by at most {diff.max_steps} steps" if diff.max_steps else ""
        stderr.print(f"on-device parity vs host LiteRT ({p.count} inputs): top-1 agreement "
                     f"{p.top1_agreement:.3f}, cosine min {p.cosine_min:.5f}, max abs err {p.max_abs_err:.3g}; "
                     f"{diff.differing}/{diff.values} {diff.dtype} output values differ{steps}")


# --- the ARM64 twin --------------------------------------------------------------------------------

def _bench_on_twin(files, cpu, threads, parity, parity_data, parity_count, torch_model, weights, timeout_s,
                   quiet, unsupported):
    from mixdeploy.bench import twin

    used = [flag for flag, value in unsupported.items() if value]
    if used:
        raise MixdeployError(f"{', '.join(used)} does not apply to --device arm64 (the ARM64 twin runs "
                             f"LiteRT's aarch64 XNNPACK kernels and measures no latency)")
    if not parity:
        raise MixdeployError(f"--device arm64 checks what the phone's CPU kernels compute: add --parity. "
                             f"{twin.NO_LATENCY}")
    twin.check_cpu(twin.find_twin(), cpu)     # not set up, or no such CPU: say so before any work
    from mixdeploy.bench.inputs import parity_images

    explicit_torch = _load_torch_module(torch_model, weights) if torch_model else None
    results = []
    for path in files:
        images = parity_images(path, parity_data, parity_count)
        torch_module, why_not = (explicit_torch, None) if explicit_torch is not None else _manifest_torch(path)
        with stage_progress(enabled=not quiet) as progress:
            result = twin.bench_twin(path, images, cpu=cpu, torch_module=torch_module, threads=threads,
                                     timeout_s=timeout_s,
                                     progress=_counting(progress, f"arm64:{cpu} {Path(path).name}", len(images)))
        if why_not:
            result.notes.append(why_not)
        results.append(result.to_dict())
        if not quiet:
            _print_twin_result(result)
    if quiet:
        print_json({"results": results, "table": [], "latency": None, "note": twin.NO_LATENCY})


def _manifest_torch(path):
    from mixdeploy.bench import twin

    loaded, why_not = twin.reference_model(path)
    return (loaded.module if loaded else None), why_not


def _counting(progress, stage: str, total: int):
    """A runtimes-style progress (images just done) driving a stage_progress bar."""
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(stage, done, total)
    return step


def _print_twin_result(result) -> None:
    from rich.table import Table

    inside = result.inside
    stderr.print(f"[bold]{escape(result.device)}[/]: ran on {inside['machine']} ({escape(str(inside['cpu_model']))}, "
                 f"features {', '.join(inside['features']) or 'none'}), ai-edge-litert {inside['ai_edge_litert']} "
                 f"inside, {inside['delegate_nodes']} XNNPACK partition(s); host {result.host['machine']} "
                 f"ai-edge-litert {result.host['ai_edge_litert']}")
    table = Table(title=escape(f"{Path(result.model_path).name} on {result.device}: {result.images} inputs "
                               f"from {result.data}"))
    # Narrow columns: the table fits 80 columns (CI logs); the JSON has every metric.
    for column in ("outputs", "agree", "top-1", "cos min", "max|err|", "differ", "steps"):
        table.add_column(column, justify="left" if column == "outputs" else "right", no_wrap=True)
    p, diff = result.vs_host, result.vs_host.output_difference
    table.add_row("arm64 vs x86", f"{p.top1_agreement * 100:.2f}%", "-", f"{p.cosine_min:.6f}",
                  f"{p.max_abs_err:.3g}", f"{diff.differing}/{diff.values} {diff.fraction * 100:.1f}%",
                  "-" if diff.max_steps is None else str(diff.max_steps))
    for label, m in (("arm64 vs torch", result.vs_torch), ("x86 vs torch", result.host_vs_torch)):
        if m is not None:
            table.add_row(label, f"{m.top1_agreement * 100:.2f}%", "-" if m.top1 is None else f"{m.top1 * 100:.2f}%",
                          f"{m.min_cosine:.6f}", f"{m.max_abs_error:.3g}", "-", "-")
    stdout.print(table)
    if result.vs_torch is not None and result.vs_torch.reference_top1 is not None:
        stderr.print(f"PyTorch top-1 on these inputs: {result.vs_torch.reference_top1 * 100:.2f}%")
    if diff.steps:
        stderr.print(f"{diff.dtype} output values off the host's by N steps: "
                     + ", ".join(f"{n} by {k}" for k, n in diff.steps.items()))
    for note in result.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
