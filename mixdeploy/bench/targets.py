"""`mixdeploy bench` as one library call: a BenchRequest goes to its target (this host, Android
phones over adb, or the ARM64 twin), after the checks that its flags fit that target.

run_bench returns a BenchOutcome (results, latency rows, failed phones) and tells a BenchShow
(mixdeploy.views.bench) what happens as it happens; the command prints the outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from mixdeploy.errors import MixdeployError


@dataclass
class BenchRequest:
    """The flags of `mixdeploy bench`, by their click parameter names."""

    files: tuple[str, ...]
    device: str = "host"
    threads: list[int] | None = None
    runs: int = 50
    warmup: int = 5
    no_xnnpack: bool = False
    baselines: tuple[str, ...] = ()
    onnx_path: str | None = None
    torch_model: str | None = None
    weights: str | None = None
    benchmark_binary: str | None = None
    delegate: str = "xnnpack"
    op_profile: bool = False
    parity: bool = False
    parity_data: str = "fashion-mnist"
    parity_count: int = 10
    timeout_s: float = 600.0
    adb_servers: tuple[str, ...] = ()
    keep_on_device: bool = False
    device_cache_mb: int = 256
    plot: str | None = None


@dataclass
class BenchOutcome:
    results: list[dict]
    rows: list = field(default_factory=list)        # report.LatencyRow, one per timed configuration
    failures: list = field(default_factory=list)    # phone.PhoneFailure, one per phone that failed
    plot: str | None = None
    twin: bool = False                              # the ARM64 twin: parity only, no latency

    def to_json(self) -> dict:
        from mixdeploy.bench import report, twin

        if self.twin:
            return {"results": self.results, "table": [], "latency": None, "note": twin.NO_LATENCY}
        return {"results": self.results, "failures": [f.to_dict() for f in self.failures],
                "table": [r.to_dict() for r in self.rows], "mac_budget": report.MAC_BUDGET, "plot": self.plot}


def run_bench(request: BenchRequest, show) -> BenchOutcome:
    from mixdeploy.bench import report, twin

    twin_cpu = twin.parse_device(request.device)
    if twin_cpu:
        return _on_twin(request, twin_cpu, show)
    check_flags_fit_target(request)
    if request.plot:
        check_plot_path(request.plot, request.files)
    if request.device == "host":
        outcome = _on_host(request, show)
    else:
        outcome = _on_phones(request, show)
    if request.plot and outcome.rows:
        report.plot_latency_vs_macs(outcome.rows, request.plot)
    return outcome


# --- checks before any work ------------------------------------------------------------------------

def check_flags_fit_target(request: BenchRequest) -> None:
    """A flag for the other target would be silently ignored: say so instead."""
    host_only = {"no_xnnpack": "--no-xnnpack (on a phone use --delegate cpu)", "baselines": "--baseline"}
    phone_only = {"op_profile": "--op-profile", "parity": "--parity", "benchmark_binary": "--benchmark-binary",
                  "adb_servers": "--adb-server", "keep_on_device": "--keep-on-device"}
    on_host = request.device == "host"
    used = [name for key, name in (phone_only if on_host else host_only).items() if getattr(request, key)]
    if used:
        where = "a phone (--device MODEL|SERIAL|all)" if on_host else "the host"
        raise MixdeployError(f"{', '.join(used)} only applies to {where}")


def check_plot_path(plot: str, files) -> None:
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


def _twin_misfits(request: BenchRequest) -> list[str]:
    flags = {"--no-xnnpack": request.no_xnnpack, "--baseline": request.baselines, "--op-profile": request.op_profile,
             "--benchmark-binary": request.benchmark_binary, "--plot": request.plot,
             "--delegate": request.delegate != "xnnpack", "--adb-server": request.adb_servers,
             "--keep-on-device": request.keep_on_device}
    return [flag for flag, value in flags.items() if value]


def load_torch_module(name: str | None, weights: str | None):
    if not name:
        raise MixdeployError("--baseline torch needs --torch-model NAME (e.g. mixnet-s, timm:mixnet_s)")
    from mixdeploy.models import load_model

    return load_model(name, weights=weights).module


# --- host ----------------------------------------------------------------------------------------------

def _on_host(request: BenchRequest, show) -> BenchOutcome:
    from mixdeploy.artifacts import ExportFolder
    from mixdeploy.bench import report
    from mixdeploy.bench.host import bench_host

    threads = request.threads or [1, 2]
    baselines = request.baselines
    torch_module = load_torch_module(request.torch_model, request.weights) if "torch" in baselines else None
    outcome = BenchOutcome(results=[])
    for path in request.files:
        onnx_for_file = (request.onnx_path or ExportFolder.beside(path).onnx()) if "onnxruntime" in baselines else None
        show.starting(f"benchmarking {path} on the host ({request.runs} runs x {len(threads)} thread settings)")
        result = bench_host(path, threads=threads, runs=request.runs, warmup=request.warmup,
                            use_xnnpack=not request.no_xnnpack, baselines=baselines, onnx_path=onnx_for_file,
                            torch_module=torch_module)
        outcome.results.append(result.to_dict())
        outcome.rows += report.rows_from_host(result)
    outcome.plot = request.plot
    return outcome


# --- phones --------------------------------------------------------------------------------------------

def _on_phones(request: BenchRequest, show) -> BenchOutcome:
    """One phone (the first fault stops the run), or a fleet (`all`, several servers): every phone
    reported, failures as rows."""
    from mixdeploy.bench import fleet, report
    from mixdeploy.bench.adb import Adb
    from mixdeploy.bench.inputs import parity_images
    from mixdeploy.bench.phone import PhoneFailure, RunOptions, bench_phone

    servers = list(request.adb_servers)
    options = RunOptions(threads=request.threads[0] if request.threads else None, delegate=request.delegate,
                         op_profile=request.op_profile, runs=request.runs, warmup=request.warmup,
                         timeout_s=request.timeout_s, keep_on_device=request.keep_on_device,
                         device_cache_mb=request.device_cache_mb)
    outcome = BenchOutcome(results=[], plot=request.plot)

    def record(done) -> None:
        if isinstance(done, PhoneFailure):
            outcome.failures.append(done)
            return
        outcome.results.append(done.to_dict())
        outcome.rows.extend(report.rows_from_phone(done))
        show.phone(done)

    as_fleet = request.device == "all" or len(servers) > 1
    for path in request.files:
        inputs = parity_images(path, request.parity_data, request.parity_count).images if request.parity else None
        run = replace(options, parity_inputs=inputs)
        where = f" via {', '.join(servers)}" if servers else ""
        show.starting(f"benchmarking {path} on {request.device}{where} over adb")
        if as_fleet:
            for done in fleet.bench_fleet([path], request.device, servers, request.benchmark_binary, run,
                                          on_done=show.fleet_done):
                record(done)
            continue
        adb = Adb(server=servers[0] if servers else None)
        for result in bench_phone(path, device=request.device, benchmark_binary=request.benchmark_binary,
                                  threads=run.threads, delegate=run.delegate, op_profile=run.op_profile,
                                  parity_inputs=run.parity_inputs, runs=run.runs, warmup=run.warmup,
                                  timeout_s=run.timeout_s, adb=adb, keep_on_device=run.keep_on_device,
                                  device_cache_mb=run.device_cache_mb):
            record(result)
    return outcome


# --- the ARM64 twin ---------------------------------------------------------------------------------------

def _on_twin(request: BenchRequest, cpu: str, show) -> BenchOutcome:
    from mixdeploy.bench import twin
    from mixdeploy.bench.inputs import parity_images

    misfits = _twin_misfits(request)
    if misfits:
        raise MixdeployError(f"{', '.join(misfits)} does not apply to --device arm64 (the ARM64 twin runs "
                             f"LiteRT's aarch64 XNNPACK kernels and measures no latency)")
    if not request.parity:
        raise MixdeployError(f"--device arm64 checks what the phone's CPU kernels compute: add --parity. "
                             f"{twin.NO_LATENCY}")
    twin.check_cpu(twin.find_twin(), cpu)     # not set up, or no such CPU: say so before any work
    explicit_torch = load_torch_module(request.torch_model, request.weights) if request.torch_model else None
    threads = (request.threads or [1])[0]
    outcome = BenchOutcome(results=[], twin=True)
    for path in request.files:
        images = parity_images(path, request.parity_data, request.parity_count)
        torch_module, why_not = (explicit_torch, None) if explicit_torch is not None else _manifest_torch(path)
        with show.progress() as progress:
            result = twin.bench_twin(path, images, cpu=cpu, torch_module=torch_module, threads=threads,
                                     timeout_s=request.timeout_s,
                                     progress=_counting(progress, f"arm64:{cpu} {Path(path).name}", len(images)))
        if why_not:
            result.notes.append(why_not)
        outcome.results.append(result.to_dict())
        show.twin(result)
    return outcome


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
