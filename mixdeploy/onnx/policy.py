"""`auto` lowering: per MixConv layer, time each candidate lowering on this machine's LiteRT.

Which lowering is fastest is an empirical, per-runtime, per-layer question (XNNPACK
builds differ; notes/tflite.md). For each distinct layer signature we build the
single-layer ONNX graph, apply every candidate lowering with the same code the full
rewrite uses, translate that small graph op for op into TensorFlow, convert with
tf.lite.TFLiteConverter (fp32, or int8 from a few random samples) and time it with the
LiteRT interpreter (XNNPACK, 1 thread, candidates interleaved, median). The winner is
cached per (runtime id, layer signature) in a JSON file, so a cache hit measures nothing.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from mixdeploy.atomic import write_json_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx.graph import Namer, to_ir, to_proto
from mixdeploy.onnx.lowering import LOWERINGS, lower_mixconv
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec, find_mixconvs

PRECISIONS = ("fp32", "int8")
# Within this fraction of the fastest, the simpler lowering (earlier in LOWERINGS) wins:
# sub-10-microsecond layers differ by timer noise, not by kernel quality.
TIE_TOLERANCE = 0.05
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's converter logs are not ours to print


# ---------------------------------------------------------------- cache

def cache_dir() -> Path:
    root = os.environ.get("MIXDEPLOY_CACHE_DIR") or Path.home() / ".cache" / "mixdeploy"
    return Path(root) / "lowering"


def runtime_id(precision: str) -> str:
    from ai_edge_litert import __version__ as litert_version

    return f"litert-{litert_version}-xnnpack-1t-{precision}-{platform.machine()}"


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


# ---------------------------------------------------------------- policy

def choose_lowerings(specs: list[MixConvSpec], runtime: str = "fp32",
                     progress: Callable[[int, int, str], None] | None = None,
                     candidates=LOWERINGS) -> dict[str, str]:
    """signature -> fastest lowering for every spec (measured once per distinct signature)."""
    if runtime not in PRECISIONS:
        raise MixdeployError(f"unknown runtime precision {runtime!r} for lowering=auto; use fp32 or int8.")
    rid = runtime_id(runtime)
    cache = load_cache(rid)
    distinct = {s.signature: s for s in specs}
    todo = [s for sig, s in distinct.items() if sig not in cache]
    for i, spec in enumerate(todo):
        if progress:
            progress(i, len(todo), spec.name)
        timings = measure_layer(spec, runtime, candidates)
        cache[spec.signature] = {"choice": pick_fastest(timings), "ms": timings, "layer": spec.name}
        save_cache(rid, cache)  # after each layer: an interrupted run keeps what it measured
    if progress and todo:
        progress(len(todo), len(todo), "")
    return {sig: cache[sig]["choice"] for sig in distinct}


def pick_fastest(timings: dict[str, float]) -> str:
    best = min(timings.values())
    return next(name for name in LOWERINGS if name in timings and timings[name] <= best * (1 + TIE_TOLERANCE))


def measure_layer(spec: MixConvSpec, precision: str = "fp32", candidates=LOWERINGS,
                  rounds: int = 15) -> dict[str, float]:
    """Median milliseconds per candidate lowering of one MixConv layer (identical graphs measured once)."""
    layer = mixconv_layer_model(spec)
    models: dict[str, bytes] = {}
    for lowering in candidates:
        lowered, applied = lower_single_layer(layer, lowering)
        if applied != lowering:
            continue  # e.g. decompose of a layer without big kernels == split
        models[lowering] = tflite_from_onnx_layer(lowered, precision)
    return time_tflite_models(models, rounds=rounds)


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


def lower_single_layer(layer: onnx.ModelProto, lowering: str) -> tuple[onnx.ModelProto, str]:
    model = to_ir(layer)
    match = find_mixconvs(model.graph)[0]
    outcome = lower_mixconv(model.graph, Namer(model.graph), match, lowering)
    return to_proto(model), outcome.lowering


# ---------------------------------------------------------------- ONNX layer -> TF -> TFLite

def _same_padding(pads, kernel, strides, in_hw) -> bool:
    """True when explicit ONNX pads equal what TF 'SAME' would pad (so no PAD op is needed)."""
    for axis in (0, 1):
        k, s, n = kernel[axis], strides[axis], in_hw[axis]
        out = -(-n // s)
        total = max((out - 1) * s + k - n, 0)
        if (pads[axis], pads[axis + 2]) != (total // 2, total - total // 2):
            return False
    return True


def onnx_layer_to_tf(model: onnx.ModelProto):
    """A tf.function computing `model` in NHWC. Handles the ops a lowered MixConv uses."""
    import tensorflow as tf

    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}

    def fn(x):
        env = {model.graph.input[0].name: x}
        for node in model.graph.node:
            a = {at.name: helper.get_attribute_value(at) for at in node.attribute}
            ins = [env.get(n) if n in env else consts.get(n) for n in node.input]
            if node.op_type == "Split":
                outs = tf.split(ins[0], [int(v) for v in ins[1]], axis=3)
            elif node.op_type == "Concat":
                outs = [tf.concat(ins, axis=3)]
            elif node.op_type == "Add":
                outs = [ins[0] + ins[1]]
            elif node.op_type == "Pad":
                p = [int(v) for v in ins[1]]
                outs = [tf.pad(ins[0], [[0, 0], [p[2], p[6]], [p[3], p[7]], [0, 0]])]
            elif node.op_type == "Slice":
                starts, ends = [int(v) for v in ins[1]], [int(v) for v in ins[2]]
                outs = [ins[0][:, starts[0]:ends[0], starts[1]:ends[1], :]]
            elif node.op_type == "Conv":
                outs = [_tf_depthwise(tf, ins, a)]
            else:
                raise MixdeployError(f"policy: op {node.op_type} ({node.name}) has no TF mapping")
            env.update(zip(node.output, outs))
        return env[model.graph.output[0].name]

    return fn


def _tf_depthwise(tf, ins, a):
    x, w = ins[0], ins[1]
    kernel = list(w.shape[2:])
    strides = list(a.get("strides", [1, 1]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    filt = np.transpose(w, (2, 3, 0, 1))  # C,1,kH,kW -> kH,kW,C,1
    in_hw = [int(x.shape[1]), int(x.shape[2])]
    if any(pads) and _same_padding(pads, kernel, strides, in_hw):
        padding = "SAME"
    else:
        if any(pads):
            x = tf.pad(x, [[0, 0], [pads[0], pads[2]], [pads[1], pads[3]], [0, 0]])
        padding = "VALID"
    y = tf.nn.depthwise_conv2d(x, filt, strides=[1, *strides, 1], padding=padding,
                               dilations=list(a.get("dilations", [1, 1])))
    return y + ins[2] if len(ins) > 2 and ins[2] is not None else y


def tflite_from_onnx_layer(model: onnx.ModelProto, precision: str = "fp32", samples: int = 4) -> bytes:
    import tensorflow as tf

    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    nhwc = [dims[0], dims[2], dims[3], dims[1]]
    fn = tf.function(onnx_layer_to_tf(model), input_signature=[tf.TensorSpec(nhwc, tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if precision == "int8":
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.standard_normal(nhwc).astype(np.float32)]
                                                    for _ in range(samples))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Statistics for quantized inputs were expected": random samples suffice
        return converter.convert()


def time_tflite_models(models: dict[str, bytes], rounds: int = 15, warmup: int = 2) -> dict[str, float]:
    """Median ms per model; models are run interleaved so drift hits all of them alike."""
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for name, content in models.items():
        interp = Interpreter(model_content=content, num_threads=1)
        try:
            interp.allocate_tensors()
        except RuntimeError:
            continue  # a lowering this runtime cannot prepare is no candidate
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
        interpreters[name] = interp
    times: dict[str, list[float]] = {name: [] for name in interpreters}
    for r in range(warmup + rounds):
        for name, interp in interpreters.items():
            t0 = time.perf_counter()
            interp.invoke()
            if r >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(t)) for name, t in times.items()}
