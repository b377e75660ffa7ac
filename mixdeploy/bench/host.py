"""Host benchmark: LiteRT interpreter (XNNPACK on by default), optional onnxruntime/PyTorch baselines.

Host numbers are for comparing variants of one model on one machine (which lowering, fp32 vs
int8), not a stand-in for phone latency. Runs are interleaved across configurations (one run of
each config per round) so that frequency/thermal drift hits every configuration equally.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mixdeploy.errors import MixdeployError
from mixdeploy.runtimes import quantize_for_input, torch_threads


@dataclass
class HostConfigResult:
    runtime: str                       # litert | onnxruntime | torch
    threads: int
    xnnpack: bool | None               # LiteRT only
    init_ms: float                     # load + allocate (+ first delegate preparation)
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    runs: int
    peak_rss_delta_mb: float | None    # peak resident memory over the pre-load baseline
    delegate_nodes: int | None = None  # LiteRT: nodes handed to a delegate (0 = builtin kernels only)
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def label(self) -> str:
        # LiteRT rows are named by kernel set: "xnnpack x2" / "builtin x1"; baselines by runtime.
        name = self.runtime if self.xnnpack is None else ("xnnpack" if self.xnnpack else "builtin")
        return f"{name} x{self.threads}"


@dataclass
class HostBenchResult:
    model_path: str
    input_shape: list[int]
    input_dtype: str
    configs: list[HostConfigResult]
    host: dict

    def best(self, runtime: str = "litert") -> HostConfigResult | None:
        own = [c for c in self.configs if c.runtime == runtime]
        return min(own, key=lambda c: c.median_ms) if own else None

    def to_dict(self) -> dict:
        d = asdict(self)
        for c in d["configs"]:
            c.pop("samples_ms", None)
        return d


# --- memory: /proc, no psutil ------------------------------------------------------------------

def _proc_status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each config gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _MemoryProbe:
    def __enter__(self):
        self.peak_resettable = _reset_peak_rss()
        self.baseline_kb = _proc_status_kb("VmRSS")
        return self

    def __exit__(self, *exc):
        key = "VmHWM" if self.peak_resettable else "VmRSS"
        end = _proc_status_kb(key)
        self.delta_mb = None if end is None or self.baseline_kb is None else max(0.0, (end - self.baseline_kb) / 1024)
        return False


# --- runners: each returns a zero-argument callable that does one inference --------------------

@dataclass
class TimedConfig:
    runtime: str
    threads: int
    xnnpack: bool | None
    make: Callable[[], Callable[[], object]]


def litert_runner(model: str | bytes, threads: int, use_xnnpack: bool, input_nhwc: np.ndarray | list[np.ndarray]):
    """`model`: a .tflite path, or the flatbuffer itself (candidates built in memory); `input_nhwc`:
    its input, or one array per input (single-op models of ADD, CONCATENATION...)."""
    def make():
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": model}
        interp = Interpreter(**source, num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
        values = input_nhwc if isinstance(input_nhwc, list) else [input_nhwc]
        for details, value in zip(interp.get_input_details(), values):
            interp.set_tensor(details["index"], value)
        # Proof of what ran: XNNPACK shows up as DELEGATE nodes in the execution plan.
        facts = {"delegate_nodes": sum(op["op_name"] == "DELEGATE" for op in interp._get_ops_details())}

        def run():
            interp.invoke()
        return run, facts
    return make


def onnxruntime_runner(onnx_path: str, threads: int, input_nchw: np.ndarray):
    def make():
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(onnx_path, opts, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: input_nchw}
        return (lambda: session.run(None, feed)), {}
    return make


def _torch_runner(module, threads: int, input_nchw: np.ndarray):
    def make():
        import torch

        x = torch.from_numpy(input_nchw)
        module.eval()

        def run():
            with torch_threads(threads), torch.inference_mode():
                module(x)
        return run, {}
    return make


# --- inputs ------------------------------------------------------------------------------------

def tflite_input_details(model: str | bytes) -> dict:
    """Input details of a .tflite path or of the flatbuffer bytes."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=model) if isinstance(model, bytes) else Interpreter(model_path=str(model))
    return interp.get_input_details()[0]


def random_inputs(details: dict, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float NCHW tensor and the same values as the TFLite input (NHWC, quantized if int)."""
    shape = [int(s) for s in details["shape"]]
    rng = np.random.default_rng(seed)
    if len(shape) == 4:
        n, h, w, c = shape
        nchw = rng.standard_normal((n, c, h, w)).astype(np.float32)
        model_input = quantize_for_input(nchw.transpose(0, 2, 3, 1), details)
    else:
        nchw = rng.standard_normal(shape).astype(np.float32)
        model_input = quantize_for_input(nchw, details)
    return nchw, model_input


# --- the benchmark ------------------------------------------------------------------------------

def bench_host(tflite_path: str | os.PathLike, threads: Sequence[int] = (1, 2), runs: int = 50,
               warmup: int = 5, use_xnnpack: bool = True, baselines: Sequence[str] = (),
               onnx_path: str | os.PathLike | None = None, torch_module=None,
               also_without_xnnpack: bool = False) -> HostBenchResult:
    """Benchmark a .tflite on this machine (and, optionally, the same network in onnxruntime
    from `onnx_path` and PyTorch from `torch_module`), interleaving runs across configs."""
    tflite_path = str(tflite_path)
    if not Path(tflite_path).is_file():
        raise MixdeployError(f"{tflite_path} does not exist: give the path of a .tflite file")
    if runs < 1 or warmup < 0:
        raise MixdeployError("--runs must be >= 1 and --warmup >= 0")
    try:
        details = tflite_input_details(tflite_path)
    except ValueError as err:
        raise MixdeployError(f"{tflite_path} is not a valid TFLite model ({err}): re-export it") from err
    input_nchw, input_model = random_inputs(details)

    configs = _build_configs(tflite_path, threads, use_xnnpack, also_without_xnnpack, baselines,
                             onnx_path, torch_module, input_nchw, input_model)
    results = run_interleaved(configs, runs, warmup)
    return HostBenchResult(model_path=tflite_path, input_shape=[int(s) for s in details["shape"]],
                           input_dtype=np.dtype(details["dtype"]).name, configs=results,
                           host=host_info())


def bench_models(models: dict[str, str | os.PathLike | bytes], threads: Sequence[int] = (1, 2), runs: int = 50,
                 warmup: int = 5, onnx_path: str | os.PathLike | None = None) -> dict[str, dict[str, float]]:
    """Median ms of several .tflite models (e.g. ours and the peers', or the lowering candidates
    of one layer) timed in ONE interleaved run, so load changes on a shared machine hit every
    model alike. A model is a path or the flatbuffer bytes. With `onnx_path`, the ONNX in
    onnxruntime joins as "onnxruntime fp32". Returns {label: {"1": ms, "2": ms}}."""
    configs, labels = [], []
    for label, model in models.items():
        model = model if isinstance(model, bytes) else str(model)
        _, model_input = random_inputs(tflite_input_details(model))
        for n in threads:
            configs.append(TimedConfig("litert", n, True, litert_runner(model, n, True, model_input)))
            labels.append(label)
    if onnx_path is not None:
        first_model = next(iter(models.values()))
        first = tflite_input_details(first_model if isinstance(first_model, bytes) else str(first_model))
        input_nchw, _ = random_inputs(first)
        for n in threads:
            configs.append(TimedConfig("onnxruntime", n, None, onnxruntime_runner(str(onnx_path), n, input_nchw)))
            labels.append("onnxruntime fp32")
    medians: dict[str, dict[str, float]] = {}
    for label, result in zip(labels, run_interleaved(configs, runs, warmup)):
        medians.setdefault(label, {})[str(result.threads)] = result.median_ms
    return medians


def run_interleaved(configs: list[TimedConfig], runs: int, warmup: int,
                     on_round: Callable[[], None] = lambda: None) -> list[HostConfigResult]:
    """Prepare every config, then time one run of each per round, `runs` rounds (`on_round` after each)."""
    prepared = []
    for config in configs:
        with _MemoryProbe() as probe:
            start = time.perf_counter()
            run, facts = config.make()
            init_ms = (time.perf_counter() - start) * 1000
            for _ in range(warmup):
                run()
        prepared.append((config, run, init_ms, probe.delta_mb, facts))

    samples: list[list[float]] = [[] for _ in prepared]
    for _ in range(runs):
        for i, (_, run, _, _, _) in enumerate(prepared):
            start = time.perf_counter()
            run()
            samples[i].append((time.perf_counter() - start) * 1000)
        on_round()
    return [_summarise(config, init_ms, mem, facts, times)
            for (config, _, init_ms, mem, facts), times in zip(prepared, samples)]


def _build_configs(tflite_path, threads, use_xnnpack, also_without_xnnpack, baselines, onnx_path,
                   torch_module, input_nchw, input_model) -> list[TimedConfig]:
    unknown = set(baselines) - {"onnxruntime", "torch"}
    if unknown:
        raise MixdeployError(f"unknown baseline(s) {sorted(unknown)}: choose onnxruntime and/or torch")
    xnnpack_modes = [use_xnnpack] + ([False] if also_without_xnnpack and use_xnnpack else [])
    configs = []
    for n in threads:
        for xnn in xnnpack_modes:
            configs.append(TimedConfig("litert", n, xnn, litert_runner(tflite_path, n, xnn, input_model)))
        if "onnxruntime" in baselines:
            if onnx_path is None:
                raise MixdeployError("the onnxruntime baseline needs the .onnx model: pass --onnx PATH")
            configs.append(TimedConfig("onnxruntime", n, None, onnxruntime_runner(str(onnx_path), n, input_nchw)))
        if "torch" in baselines:
            if torch_module is None:
                raise MixdeployError("the torch baseline needs the PyTorch model: pass --torch-model NAME")
            configs.append(TimedConfig("torch", n, None, _torch_runner(torch_module, n, input_nchw)))
    return configs


def _summarise(config: TimedConfig, init_ms: float, mem_mb: float | None, facts: dict,
               times: list[float]) -> HostConfigResult:
    arr = np.asarray(times)
    return HostConfigResult(runtime=config.runtime, threads=config.threads, xnnpack=config.xnnpack,
                            init_ms=init_ms, median_ms=float(np.median(arr)),
                            p90_ms=float(np.percentile(arr, 90)), min_ms=float(arr.min()),
                            mean_ms=float(arr.mean()), runs=len(times), peak_rss_delta_mb=mem_mb,
                            delegate_nodes=facts.get("delegate_nodes"), samples_ms=[float(t) for t in times])


def host_info() -> dict:
    import ai_edge_litert

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown")}
