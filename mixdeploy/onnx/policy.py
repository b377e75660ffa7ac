"""`auto` lowering: per MixConv layer, the fastest candidate lowering where it was measured.

Which lowering is fastest is an empirical, per-runtime, per-layer question (XNNPACK builds and
CPUs differ; docs/rewrites.md, "The measurements"). Two sources of choices, one mechanism (`choose_lowerings`, called
by `rewrite(..., lowering="auto")` for each distinct layer signature):

- measured on this machine: for each distinct layer signature the single-layer ONNX graph is
  lowered with every candidate through `rewrite(layer, lowering=...)` (the passes the whole model
  goes through), converted by the project's converter (`convert_onnx`: the shipped model's
  quantizer and calibration code, fed random layer inputs) and the candidates are timed by the
  host bench's interleaved timer (`bench.host.bench_models`: XNNPACK, 1 thread, median). The
  winner is cached per (runtime id, layer signature) in a JSON file: a cache hit measures nothing.
- measured on a device by `mixdeploy tune`: `use_tuned(TunedChoices(...))` around the rewrite
  makes its signatures' choices win; layers the tune file lacks are measured here as above.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper

from mixdeploy.atomic import write_json_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx.lowering import LOWERINGS
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec

TIMED_PRECISIONS = ("fp32", "int8")   # the runtimes a lowering is timed on
# Within this fraction of the fastest, the simpler lowering (earlier in LOWERINGS) wins:
# sub-10-microsecond layers differ by timer noise, not by kernel quality.
TIE_TOLERANCE = 0.05
# Part of the runtime id: choices measured through another timing path (the first policy timed
# layers converted by a separate ONNX->TF translator and TFLiteConverter's calibrator) are not reused,
# nor those timed before piece_pads reshaped the decomposed candidates.
TIMING_PATH = "convert_onnx-piece_pads"
CALIBRATION_SAMPLES = 8      # random layer inputs: enough for the converter's ranges; timing ignores values
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's converter logs are not ours to print


# ---------------------------------------------------------------- cache

def cache_root() -> Path:
    """~/.cache/mixdeploy, or $MIXDEPLOY_CACHE_DIR."""
    return Path(os.environ.get("MIXDEPLOY_CACHE_DIR") or Path.home() / ".cache" / "mixdeploy")


def cache_dir() -> Path:
    return cache_root() / "lowering"


def runtime_id(precision: str) -> str:
    from ai_edge_litert import __version__ as litert_version

    return f"litert-{litert_version}-xnnpack-1t-{precision}-{platform.machine()}-{TIMING_PATH}"


def load_cache(rid: str) -> dict:
    path = cache_dir() / f"{rid}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged cache: measure again


def save_cache(rid: str, cache: dict) -> None:
    """The cache only saves time: a folder that cannot be written costs a warning, not the run."""
    global _cache_warned
    try:
        write_json_atomic(cache_dir() / f"{rid}.json", cache)
    except OSError as err:
        if not _cache_warned:
            from mixdeploy.errors import os_error_message

            warnings.warn(f"cannot save the lowering timings ({os_error_message(err)}); they are measured "
                          "again next time. Set MIXDEPLOY_CACHE_DIR to a writable folder to keep them.",
                          RuntimeWarning, stacklevel=2)
            _cache_warned = True


_cache_warned = False


# ---------------------------------------------------------------- choices measured on a device

@dataclass
class TunedChoices:
    """Per-signature lowerings measured on a device (`mixdeploy tune`), for `use_tuned`."""

    precision: str
    choices: dict[str, str]                 # layer signature -> lowering
    source: str = ""                        # where they came from (the tune file), for messages
    from_tune: dict[str, str] = field(default_factory=dict)    # filled by choose_lowerings: layer -> lowering
    measured_here: list[str] = field(default_factory=list)     # layers the tune file did not cover


_TUNED: contextvars.ContextVar[TunedChoices | None] = contextvars.ContextVar("mixdeploy_tuned", default=None)


@contextlib.contextmanager
def use_tuned(tuned: TunedChoices) -> Iterator[TunedChoices]:
    """Within the block, `auto` takes `tuned`'s choice for every layer signature it has."""
    token = _TUNED.set(tuned)
    try:
        yield tuned
    finally:
        _TUNED.reset(token)


# ---------------------------------------------------------------- policy

def choose_lowerings(specs: list[MixConvSpec], runtime: str = "fp32",
                     progress: Callable[[int, int, str], None] | None = None,
                     candidates=LOWERINGS) -> dict[str, str]:
    """signature -> lowering for every spec: tuned on a device when `use_tuned` is active and
    has the signature, else the fastest measured here (once per distinct signature, cached)."""
    if runtime not in TIMED_PRECISIONS:
        raise MixdeployError(f"unknown runtime precision {runtime!r} for lowering=auto; use fp32 or int8.")
    distinct = {s.signature: s for s in specs}
    chosen = _tuned_choices(specs, runtime)
    todo_signatures = [sig for sig in distinct if sig not in chosen]
    rid = runtime_id(runtime)
    cache = load_cache(rid)
    todo = [distinct[sig] for sig in todo_signatures if sig not in cache]
    for i, spec in enumerate(todo):
        if progress:
            progress(i, len(todo), spec.name)
        timings = measure_layer(spec, runtime, candidates)
        cache[spec.signature] = {"choice": pick_fastest(timings), "ms": timings, "layer": spec.name}
        save_cache(rid, cache)  # after each layer: an interrupted run keeps what it measured
    if progress and todo:
        progress(len(todo), len(todo), "")
    chosen.update({sig: cache[sig]["choice"] for sig in todo_signatures})
    return chosen


def _tuned_choices(specs: list[MixConvSpec], runtime: str) -> dict[str, str]:
    tuned = _TUNED.get()
    if tuned is None:
        return {}
    if tuned.precision != runtime:
        raise MixdeployError(f"the tuning in {tuned.source or 'use_tuned'} was measured for {tuned.precision}, "
                             f"but this export's lowering is chosen for {runtime}: tune again with "
                             f"--precision {runtime}, or export the precision that was tuned")
    chosen = {}
    for spec in specs:
        if spec.signature in tuned.choices:
            chosen[spec.signature] = tuned.from_tune[spec.name] = tuned.choices[spec.signature]
        elif spec.name not in tuned.measured_here:
            tuned.measured_here.append(spec.name)
    return chosen


def auto_runtime(precisions) -> str:
    """The runtime `auto` times lowerings on for an export of `precisions`: int8 and fp32 kernels
    rank the lowerings differently, and the int8 model, when there is one, is what users ship."""
    return "int8" if "int8" in precisions else "fp32"


def pick_fastest(timings: dict[str, float], tolerance: float = TIE_TOLERANCE) -> str:
    best = min(timings.values())
    return next(name for name in LOWERINGS if name in timings and timings[name] <= best * (1 + tolerance))


def measure_layer(spec: MixConvSpec, precision: str = "fp32", candidates=LOWERINGS,
                  rounds: int = 15) -> dict[str, float]:
    """Median milliseconds per candidate lowering of one MixConv layer (identical graphs measured once)."""
    from mixdeploy.bench.host import bench_models

    layer = mixconv_layer_model(spec)
    models: dict[str, bytes] = {}
    for lowering in candidates:
        lowered, applied = lower_single_layer(layer, lowering)
        if applied != lowering:
            continue  # e.g. decompose of a layer without big kernels == split
        models[lowering] = candidate_tflite(lowered, precision)
    medians = bench_models(models, threads=(1,), runs=rounds, warmup=2)
    return {name: by_threads["1"] for name, by_threads in medians.items()}


# ---------------------------------------------------------------- single-layer graphs

def mixconv_layer_model(spec: MixConvSpec, seed: int = 0) -> onnx.ModelProto:
    """Split -> depthwise Conv per group -> Concat with random weights, the shape of `spec`."""
    rng = np.random.default_rng(seed)
    c = sum(spec.channels)
    h, w = spec.input_hw
    inits = [helper.make_tensor("split", TensorProto.INT64, [len(spec.channels)], spec.channels)]
    nodes = [helper.make_node("Split", ["x", "split"], [f"g{i}" for i in range(len(spec.channels))],
                              axis=1, name="mix/Split")]
    for i, (ch, k, pads) in enumerate(zip(spec.channels, spec.kernels, spec.pads)):
        weight = rng.standard_normal((ch, 1, *k)).astype(np.float32) / float(k[0] * k[1])
        inits += [onnx.numpy_helper.from_array(weight, f"w{i}"),
                  onnx.numpy_helper.from_array(rng.standard_normal(ch).astype(np.float32) * 0.1, f"b{i}")]
        nodes.append(helper.make_node("Conv", [f"g{i}", f"w{i}", f"b{i}"], [f"y{i}"], group=ch, kernel_shape=k,
                                      pads=pads, strides=spec.strides, dilations=spec.dilations, name=f"mix.{i}"))
    nodes.append(helper.make_node("Concat", [f"y{i}" for i in range(len(spec.channels))], ["y"], axis=1,
                                  name="mix/Concat"))
    graph = helper.make_graph(nodes, "mixconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# What the whole model's rewrite does to a MixConv layer, so the candidates timed are the ones that ship.
LAYER_PASSES = ("lower_mixconv", "piece_pads")


def lower_single_layer(layer: onnx.ModelProto, lowering: str) -> tuple[onnx.ModelProto, str]:
    """The layer lowered by the rewrite itself; returns (model, the lowering actually applied)."""
    from mixdeploy.onnx.rewrite import rewrite

    result = rewrite(layer, lowering=lowering, passes=LAYER_PASSES)
    [applied] = result.report.lowering_choices.values()
    return result.model, applied


def candidate_tflite(model: onnx.ModelProto, precision: str = "fp32", seed: int = 0) -> bytes:
    """`model` as TFLite flatbuffer bytes, built like the shipped model (`convert_onnx`; int8 with
    the default recipe, calibrated on random inputs of the layer's shape)."""
    from mixdeploy.tflite.convert import convert_onnx

    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    calibration = None
    if precision == "int8":
        calibration = np.random.default_rng(seed).standard_normal(
            (CALIBRATION_SAMPLES, *dims[1:])).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="mixdeploy-policy-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter's deprecation chatter is not the user's concern
        path = Path(tmp) / f"candidate_{precision}.tflite"
        convert_onnx(model, path, precision=precision, calibration=calibration)
        return path.read_bytes()
