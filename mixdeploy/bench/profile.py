"""Where a TFLite model's milliseconds go, per op and per op class, beside each class's ceiling.

LiteRT's Python interpreter has no op profiler, so on the host every op is cut out of the model
into a single-op model (its own weights, quantization and shapes; its activations fed random
values) and timed by LiteRT/XNNPACK, interleaved with the whole model in one run
(`host.run_interleaved`), so load changes on a shared machine hit all of them alike. The cost
of one `invoke()` from Python is measured in the same run (a 1-element ADD) and taken off every
time. What single-op timing does not see: XNNPACK fusing ops across the graph (a PAD into the
convolution after it) and activations staying in cache from producer to consumer; the sum of the
op times beside the whole model's time says how much that is.

The ceiling of a class is the best GMAC/s of a single-op model of that class timed in the same
run: its op with the most MACs per output pixel (the most channels) enlarged spatially to ~4M
MACs so the call overhead vanishes, or any of its ops as it is that ran long enough to time
(memory-bound kernels are faster on data that fits in cache): what this machine reaches there. The roofline is the sum over
ops of MACs / ceiling of the op's class; ops without MACs add nothing to it. Those ops (swish,
residual adds, SE gates, pads, slices, concats) only move data, so beside the roofline stands their
data floor: the bytes each reads and writes (its activations, not its constants) over the best
GB/s any such op reached alone in the same run, the machine's bandwidth for this work. Roofline +
data floor is what the model would take if every op ran as fast as the best op of its kind here.

A phone's op profile (`benchmark_model --enable_op_profiling`, as `bench --op-profile` runs it)
goes into the same table (`profile_from_op_profile`), without ceilings (there is no single-op
run on the phone).
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixdeploy.bench.attribution import ModelOp, attribute, is_partition_row, model_ops
from mixdeploy.bench.parse import OpProfileRow
from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.inspect import op_name

Progress = Callable[[str, int, int], None]

# Classes in the order the table shows them.
POINTWISE, CONV, DEPTHWISE, DEPTHWISE_LARGE = "pointwise", "conv kxk", "depthwise <= 25 taps", "depthwise > 25 taps"
DECOMPOSED, SE, ELEMENTWISE, DATA_MOVEMENT, OTHER = ("decomposed pieces", "SE", "elementwise",
                                                     "pad/slice/concat", "other")
CLASSES = (POINTWISE, CONV, DEPTHWISE, DEPTHWISE_LARGE, DECOMPOSED, SE, ELEMENTWISE, DATA_MOVEMENT, OTHER)
ELEMENTWISE_OPS = {"ADD", "MUL", "SUB", "DIV", "LOGISTIC", "HARD_SWISH", "RELU", "RELU6", "TANH", "MAXIMUM",
                   "MINIMUM", "SQUARED_DIFFERENCE", "LEAKY_RELU", "PRELU", "ABS", "NEG"}
DATA_MOVEMENT_OPS = {"PAD", "PADV2", "SLICE", "STRIDED_SLICE", "SPLIT", "SPLIT_V", "CONCATENATION", "RESHAPE",
                     "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "GATHER"}
# ONNX node scopes of a squeeze-excite block (`blocks.2.0.se`, `blocks.2.0.se.conv_reduce`) and of the
# pieces of a decomposed large kernel (`blocks.2.0.conv_dw.2/piece1/...`), as the converter names them.
_SE_SCOPE = re.compile(r"(^|\.)se(\.|/|$)")
_PIECE_SCOPE = re.compile(r"/piece\d+(/|$)")
RELIABLE_OVER_OVERHEAD = 10   # an op's own time counts for a ceiling when over this many invoke costs
CEILING_MACS = 4e6           # a ceiling op is enlarged to about this many MACs: call overhead ~1%,
                             # and short enough (~0.1 ms) that other processes rarely preempt it


def op_class(op: ModelOp) -> str:
    """The class of one model op (by builtin, kernel and the ONNX scope its output names carry)."""
    scopes = op.scopes
    if any(_SE_SCOPE.search(s) for s in scopes):
        return SE
    if any(_PIECE_SCOPE.search(s) for s in scopes):
        return DECOMPOSED
    if op.op_name == "FULLY_CONNECTED" or (op.op_name == "CONV_2D" and op.kernel == (1, 1)):
        return POINTWISE
    if op.op_name == "CONV_2D":
        return CONV
    if op.op_name == "DEPTHWISE_CONV_2D":
        taps = op.kernel[0] * op.kernel[1] if op.kernel else 0
        return DEPTHWISE if taps <= 25 else DEPTHWISE_LARGE
    if op.op_name in ELEMENTWISE_OPS:
        return ELEMENTWISE
    if op.op_name in DATA_MOVEMENT_OPS:
        return DATA_MOVEMENT
    return OTHER


def achieved_gmacs(macs: int, ms: float) -> float | None:
    """GMAC/s of `macs` done in `ms` milliseconds (None without MACs or time)."""
    return macs / (ms * 1e6) if macs and ms > 0 else None


@dataclass
class OpTime:
    index: int
    op_name: str
    op_class: str
    name: str                        # its first output tensor's name (the ONNX scope)
    macs: int
    ms: float
    delegated: bool | None = None    # host: XNNPACK ran it (False: LiteRT's builtin kernel)
    folded_into: int | None = None   # host: a PAD XNNPACK folds into this conv (timed with it)
    bytes: int = 0                   # activation bytes it reads and writes (constants left out)

    @property
    def gmacs(self) -> float | None:
        return achieved_gmacs(self.macs, self.ms)

    @property
    def gbs(self) -> float | None:
        """GB/s of an op without MACs (data moved over its time); None for MAC ops."""
        return self.bytes / (self.ms * 1e6) if not self.macs and self.bytes and self.ms > 0 else None

    def data_floor_ms(self, bandwidth_gbs: float) -> float:
        """Its bytes at `bandwidth_gbs`: 0 for MAC ops (the roofline has them) and folded PADs."""
        if self.macs or self.folded_into is not None:
            return 0.0
        return self.bytes / (bandwidth_gbs * 1e6)


@dataclass
class ClassTime:
    op_class: str
    ops: int
    ms: float
    macs: int
    ceiling_gmacs: float | None = None     # this class's single-op ceiling on this machine
    ceiling_op: str | None = None          # which op, at which size
    roofline_ms: float | None = None       # MACs / ceiling
    data_floor_ms: float | None = None     # its MAC-less ops' bytes / the run's bandwidth

    @property
    def gmacs(self) -> float | None:
        return achieved_gmacs(self.macs, self.ms)


@dataclass
class ProfileResult:
    model_path: str
    source: str                      # how the op times were measured
    threads: int
    whole_ms: float | None           # the whole model, same run
    ops: list[OpTime]
    classes: list[ClassTime]
    invoke_overhead_ms: float | None = None
    bandwidth_gbs: float | None = None     # best GB/s of a MAC-less op alone in this run
    bandwidth_op: str | None = None        # which op
    host: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def sum_ops_ms(self) -> float:
        return sum(op.ms for op in self.ops)

    @property
    def roofline_ms(self) -> float | None:
        parts = [c.roofline_ms for c in self.classes if c.macs]
        return None if not parts or any(p is None for p in parts) else sum(parts)

    @property
    def data_floor_ms(self) -> float | None:
        parts = [c.data_floor_ms for c in self.classes]
        return None if not parts or any(p is None for p in parts) else sum(parts)

    @property
    def floor_ms(self) -> float | None:
        """Roofline + data floor: every op as fast as the best op of its kind ran here."""
        if self.roofline_ms is None or self.data_floor_ms is None:
            return None
        return self.roofline_ms + self.data_floor_ms

    def to_dict(self) -> dict:
        d = asdict(self)
        for op, row in zip(self.ops, d["ops"]):
            row["gmacs"] = op.gmacs
            row["gbs"] = op.gbs
        for c, row in zip(self.classes, d["classes"]):
            row["gmacs"] = c.gmacs
        d["sum_ops_ms"] = self.sum_ops_ms
        d["roofline_ms"] = self.roofline_ms
        d["sum_ops_over_whole"] = self.sum_ops_ms / self.whole_ms if self.whole_ms else None
        d["whole_over_roofline"] = self.whole_ms / self.roofline_ms if self.whole_ms and self.roofline_ms else None
        d["data_floor_ms"] = self.data_floor_ms
        d["floor_ms"] = self.floor_ms
        d["whole_over_floor"] = self.whole_ms / self.floor_ms if self.whole_ms and self.floor_ms else None
        return d


def class_times(ops: list[OpTime], ceilings: dict[str, tuple[float, str]] | None = None,
                bandwidth_gbs: float | None = None) -> list[ClassTime]:
    """Ops summed per class (table order), each with its ceiling, roofline and data floor where
    measured."""
    ceilings = ceilings or {}
    out = []
    for name in CLASSES:
        members = [op for op in ops if op.op_class == name]
        if not members:
            continue
        macs = sum(op.macs for op in members)
        ceiling, ceiling_op = ceilings.get(name, (None, None))
        roofline = macs / (ceiling * 1e6) if macs and ceiling else (0.0 if not macs else None)
        floor = sum(op.data_floor_ms(bandwidth_gbs) for op in members) if bandwidth_gbs else None
        out.append(ClassTime(name, len(members), sum(op.ms for op in members), macs, ceiling, ceiling_op, roofline,
                             floor))
    return out


# --- the model's flatbuffer: MACs and single-op models ------------------------------------------

def tflite_schema():
    from mixdeploy.tflite.inspect import tflite_schema as schema
    return schema()


def read_flatbuffer(path: Path):
    from mixdeploy.tflite.inspect import read_model
    model, _ = read_model(Path(path))
    return model


def op_macs(model, op) -> int:
    """Multiply-accumulates of one CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED (0 for the rest)."""
    name = op_name(model, op)
    tensors = model.subgraphs[0].tensors
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
        return 0
    out = [int(s) for s in tensors[op.outputs[0]].shape]
    weight = [int(s) for s in tensors[op.inputs[1]].shape]
    if name == "FULLY_CONNECTED":                       # weight: out, in
        return int(np.prod(out[:-1])) * weight[0] * weight[1]
    n, h, w, c_out = out
    if name == "CONV_2D":                               # weight: out, kh, kw, in per group
        return n * h * w * c_out * weight[1] * weight[2] * weight[3]
    return n * h * w * c_out * weight[1] * weight[2]     # depthwise: 1, kh, kw, channels


_ITEM_BYTES = {"INT8": 1, "UINT8": 1, "BOOL": 1, "INT16": 2, "FLOAT16": 2, "INT32": 4, "FLOAT32": 4,
               "INT64": 8, "FLOAT64": 8}


@functools.cache
def _item_bytes_by_type() -> dict[int, int]:
    """TensorType enum value -> bytes per element (4 for a type not listed), built once."""
    from mixdeploy.tflite.inspect import tensor_type_names

    return {value: _ITEM_BYTES.get(name, 4) for value, name in tensor_type_names().items()}


def op_bytes(model, op) -> int:
    """Bytes of the activations one op reads and writes: its non-constant inputs and its outputs."""
    tensors = model.subgraphs[0].tensors
    item_bytes = _item_bytes_by_type()
    activations = [i for i in op.inputs if i >= 0 and _constant_data(model, i) is None] + list(op.outputs)
    return sum(int(np.prod([int(s) for s in tensors[i].shape])) * item_bytes[tensors[i].type] for i in activations)


def single_op_model(model, index: int, scale: int = 1) -> bytes:
    """Op `index` of subgraph 0 alone, as a flatbuffer: its constant inputs keep their buffers, its
    other inputs become the model's inputs. `scale` > 1 enlarges a conv's output H and W by that
    factor (the input by what the conv needs), for ceiling runs."""
    return ops_model(model, [index], scale)


def ops_model(model, indices: list[int], scale: int = 1) -> bytes:
    """Ops `indices` of subgraph 0 (in that order) as a flatbuffer: what they read and no op among
    them writes becomes the model's inputs, what they write and none reads its outputs. `scale`
    as for single_op_model (one op only)."""
    import copy

    import flatbuffers

    schema = tflite_schema()
    graph = model.subgraphs[0]
    originals = [graph.operators[i] for i in indices]
    ops = [copy.deepcopy(op) for op in originals]
    used = [i for op in ops for i in list(op.inputs) + list(op.outputs) if i >= 0]
    remap = {old: new for new, old in enumerate(dict.fromkeys(used))}
    buffers = [schema.BufferT()]
    tensors = []
    for old in remap:
        tensor = copy.deepcopy(graph.tensors[old])
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is not None and len(data):
            buffers.append(copy.deepcopy(model.buffers[tensor.buffer]))
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        tensors.append(tensor)
    codes = list(dict.fromkeys(op.opcodeIndex for op in originals))
    for op in ops:
        op.inputs = [remap[i] if i >= 0 else -1 for i in op.inputs]
        op.outputs = [remap[i] for i in op.outputs]
        op.opcodeIndex = codes.index(op.opcodeIndex)
    written = {i for op in ops for i in op.outputs}
    read = {i for op in ops for i in op.inputs if i >= 0}
    sub = schema.SubGraphT()
    sub.tensors = tensors
    sub.operators = ops
    sub.inputs = [i for i in dict.fromkeys(i for op in ops for i in op.inputs)
                  if i >= 0 and i not in written and tensors[i].buffer == 0]
    sub.outputs = [i for op in ops for i in op.outputs if i not in read]
    if scale > 1:
        _enlarge(ops[0], tensors, scale, op_name(model, originals[0]))
    single = schema.ModelT()
    single.version = model.version
    single.operatorCodes = [copy.deepcopy(model.operatorCodes[c]) for c in codes]
    single.subgraphs = [sub]
    single.buffers = buffers
    single.description = "mixdeploy profile: " + ("one op" if len(ops) == 1 else f"{len(ops)} ops")
    builder = flatbuffers.Builder(1024)
    builder.Finish(single.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def folded_pad_consumer(model, index: int) -> int | None:
    """The conv that XNNPACK folds PAD `index` into, else None. XNNPACK's subgraph fuses a constant
    pad of H and W whose only reader is a convolution's input into that convolution's implicit
    padding, so in the whole model the PAD costs nothing (measured: docs/bench.md), while alone
    it is a full copy of its tensor."""
    graph = model.subgraphs[0]
    op = graph.operators[index]
    if op_name(model, op) != "PAD" or op.outputs[0] in list(graph.outputs):
        return None
    paddings = _constant(model, op.inputs[1])
    if paddings is None or paddings.size != 8 or np.any(paddings.reshape(4, 2)[[0, 3]]):
        return None
    readers = [i for i, other in enumerate(graph.operators) if op.outputs[0] in list(other.inputs)]
    if len(readers) != 1:
        return None
    reader = graph.operators[readers[0]]
    conv = op_name(model, reader) in ("CONV_2D", "DEPTHWISE_CONV_2D") and reader.inputs[0] == op.outputs[0]
    return readers[0] if conv else None


def _constant_data(model, tensor_index: int):
    """The buffer bytes of a constant tensor, None for an activation."""
    tensor = model.subgraphs[0].tensors[tensor_index]
    data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
    return None if data is None or not len(data) else data


def _constant(model, tensor_index: int) -> np.ndarray | None:
    tensor = model.subgraphs[0].tensors[tensor_index]
    data = _constant_data(model, tensor_index)
    if data is None:
        return None
    schema = tflite_schema()
    dtype = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}.get(tensor.type)
    return None if dtype is None else np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype)


def _enlarge(op, tensors, scale: int, name: str) -> None:
    """A conv's output H, W times `scale`, the input sized for it (VALID: (out-1)*stride + dilated
    kernel); a FULLY_CONNECTED's rows times scale**2 (a GEMM of that many rows)."""
    options = op.builtinOptions
    x, weight, y = tensors[op.inputs[0]], tensors[op.inputs[1]], tensors[op.outputs[0]]
    if name == "FULLY_CONNECTED":
        rows = int(np.prod([int(s) for s in y.shape][:-1])) * scale * scale
        x.shape = np.array([rows, int(weight.shape[1])], dtype=np.int32)
        y.shape = np.array([rows, int(weight.shape[0])], dtype=np.int32)
        x.shapeSignature = y.shapeSignature = None
        return
    n, h, w, c_out = (int(s) for s in y.shape)
    h, w = h * scale, w * scale
    kh, kw = int(weight.shape[1]), int(weight.shape[2])
    sh, sw = options.strideH, options.strideW
    dh, dw = options.dilationHFactor, options.dilationWFactor
    same = options.padding == tflite_schema().Padding.SAME
    in_h = h * sh if same else (h - 1) * sh + (kh - 1) * dh + 1
    in_w = w * sw if same else (w - 1) * sw + (kw - 1) * dw + 1
    x.shape = np.array([n, in_h, in_w, int(x.shape[3])], dtype=np.int32)
    y.shape = np.array([n, h, w, c_out], dtype=np.int32)
    for t in (x, y):
        t.shapeSignature = None


def tiny_add_model(dtype: str) -> bytes:
    """A 1-element ADD: what one `invoke()` costs from Python, the overhead taken off every time."""
    import flatbuffers

    schema = tflite_schema()
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.ADD
    tensors = []
    for name in ("a", "b", "y"):
        t = schema.TensorT()
        t.shape = np.array([1], dtype=np.int32)
        t.name = name
        t.buffer = 0
        if dtype == "int8":
            t.type = schema.TensorType.INT8
            q = schema.QuantizationParametersT()
            q.scale, q.zeroPoint = [0.05], [0]
            t.quantization = q
        else:
            t.type = schema.TensorType.FLOAT32
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1], [2]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.AddOptions, schema.AddOptionsT()
    sub = schema.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs = tensors, [op], [0, 1], [2]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# --- the host profile ----------------------------------------------------------------------------

def _inputs_for(model: bytes) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    from mixdeploy.bench.host import random_inputs

    interp = Interpreter(model_content=model)
    return [random_inputs(d, seed=i)[1] for i, d in enumerate(interp.get_input_details())]


def _ceiling_candidates(model, ops: list[ModelOp], classes: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per class with MACs: (op index, scale, MACs at that scale) of the op with the most MACs per
    output pixel, enlarged to about CEILING_MACS."""
    tensors = model.subgraphs[0].tensors
    graph_ops = model.subgraphs[0].operators
    best: dict[str, tuple[float, int, int]] = {}
    for op, cls in zip(ops, classes):
        macs = op_macs(model, graph_ops[op.index])
        if not macs:
            continue
        pixels = int(np.prod([int(s) for s in tensors[graph_ops[op.index].outputs[0]].shape][:-1]))
        per_pixel = macs / pixels
        if cls not in best or per_pixel > best[cls][0]:
            best[cls] = (per_pixel, op.index, macs)
    out = {}
    for cls, (_, index, macs) in best.items():
        scale = max(1, math.ceil(math.sqrt(CEILING_MACS / macs)))
        out[cls] = (index, scale, macs * scale * scale)
    return out


def profile(tflite_path: str | Path, op_profile: str | Path | None = None, progress: Progress = lambda *a: None,
            **timing) -> ProfileResult:
    """`mixdeploy profile`: the phone's op profile when `op_profile` names one, else every op timed
    here (profile_host, with `timing`: threads, runs, warmup, repeat)."""
    if op_profile:
        return load_op_profile(op_profile, tflite_path)
    return profile_host(tflite_path, progress=progress, **timing)


def profile_host(tflite_path: str | Path, threads: int = 1, runs: int = 20, warmup: int = 3, repeat: int = 5,
                 progress: Progress = lambda *a: None) -> ProfileResult:
    """Time every op of the model alone, each class's ceiling and the whole model, in one run.
    A sample of a single-op model is `repeat` invokes back to back (its weights and inputs in cache,
    as a real op's inputs are when its producer just wrote them), divided by `repeat`."""
    from mixdeploy.bench.host import TimedConfig, litert_runner, run_interleaved, host_info

    tflite_path = Path(tflite_path)
    if not tflite_path.is_file():
        raise MixdeployError(f"{tflite_path} does not exist: give the path of a .tflite file")
    if runs < 1 or warmup < 0 or threads < 1 or repeat < 1:
        raise MixdeployError("--runs, --threads and --repeat must be >= 1, --warmup >= 0")
    model = read_flatbuffer(tflite_path)
    ops = model_ops(tflite_path)
    classes = [op_class(op) for op in ops]
    graph_ops = model.subgraphs[0].operators
    whole = tflite_path.read_bytes()
    dtype = "int8" if np.dtype(_inputs_for(whole)[0].dtype).kind == "i" else "fp32"

    configs: list[TimedConfig] = []
    repeats: list[int] = []
    def add(model_bytes: bytes, n: int) -> None:
        make = litert_runner(model_bytes, threads, True, _inputs_for(model_bytes))
        configs.append(TimedConfig("litert", threads, True, _repeated(make, n)))
        repeats.append(n)
    add(whole, 1)
    add(tiny_add_model(dtype), repeat)
    for i, op in enumerate(ops):
        progress("single-op models", i, len(ops))
        add(single_op_model(model, op.index), repeat)
    progress("single-op models", len(ops), len(ops))
    enlarged = _ceiling_candidates(model, ops, classes)
    for index, scale, _ in enlarged.values():
        add(single_op_model(model, index, scale), repeat)
    folded = {op.index: folded_pad_consumer(model, op.index) for op in ops}
    folded = {pad: conv for pad, conv in folded.items() if conv is not None}
    for pad, conv in folded.items():
        add(ops_model(model, [pad, conv]), repeat)

    rounds = {"done": 0}
    def on_round() -> None:
        rounds["done"] += 1
        progress("timing (interleaved rounds)", rounds["done"], runs)
    progress("timing (interleaved rounds)", 0, runs)
    results = run_interleaved(configs, runs, warmup, on_round=on_round)

    # min, not median: on a shared machine a run of milliseconds (the whole model) is preempted far
    # more often than one of microseconds (an op), so medians would inflate the whole model only.
    per_invoke = [r.min_ms / n for r, n in zip(results, repeats)]
    overhead = per_invoke[1]
    net = [max(0.0, ms - overhead) for ms in per_invoke]
    op_times = [OpTime(op.index, op.op_name, cls, op.outputs[0] if op.outputs else "",
                       op_macs(model, graph_ops[op.index]), ms, bool(r.delegate_nodes),
                       bytes=op_bytes(model, graph_ops[op.index]))
                for op, cls, ms, r in zip(ops, classes, net[2:2 + len(ops)], results[2:2 + len(ops)])]
    first_pair = 2 + len(ops) + len(enlarged)
    ceilings = _ceilings(op_times, enlarged, net[2 + len(ops):first_pair], overhead)
    _charge_folded_pads(op_times, folded, net[first_pair:])
    bandwidth, bandwidth_op = _bandwidth(op_times, overhead)
    result = ProfileResult(model_path=str(tflite_path), threads=threads, whole_ms=net[0], ops=op_times,
                           classes=class_times(op_times, ceilings, bandwidth), invoke_overhead_ms=overhead,
                           bandwidth_gbs=bandwidth, bandwidth_op=bandwidth_op, host=host_info(),
                           source=f"each op alone in LiteRT/XNNPACK ({dtype}, {repeat} invokes back to back), "
                                  f"interleaved with the whole model, fastest of {runs} rounds, minus one "
                                  "invoke's cost")
    if folded:
        result.notes.append(f"{len(folded)} PAD(s) XNNPACK folds into the conv after them: each timed together "
                            "with its conv, the PAD charged what the pair took over the conv alone")
    builtin = Counter(op.op_name for op in op_times if op.delegated is False)
    if builtin:
        result.notes.append("run by LiteRT's builtin kernels, not XNNPACK, when alone: "
                            + ", ".join(f"{n} x{c}" for n, c in builtin.most_common()))
    return result


def _charge_folded_pads(op_times: list[OpTime], folded: dict[int, int], pair_ms: list[float]) -> None:
    """A folded PAD's time: (PAD + its conv, timed together) minus the conv alone, at least 0."""
    by_index = {op.index: op for op in op_times}
    for (pad, conv), ms in zip(folded.items(), pair_ms):
        by_index[pad].ms = max(0.0, ms - by_index[conv].ms)
        by_index[pad].folded_into = conv


def _repeated(make, n: int):
    """A runner factory whose run() is `n` runs of `make`'s."""
    def make_n():
        run, facts = make()
        def run_n():
            for _ in range(n):
                run()
        return run_n, facts
    return make_n


def _ceilings(op_times: list[OpTime], enlarged: dict[str, tuple[int, int, int]], enlarged_ms: list[float],
              overhead_ms: float) -> dict[str, tuple[float, str]]:
    """Per class: the highest GMAC/s measured in this run on one of its ops, enlarged or as it is.
    An op as it is counts only when it ran well over an invoke's cost (RELIABLE_OVER_OVERHEAD
    times): a few microseconds less that cost are too noisy to divide MACs by. As it is matters
    for memory-bound kernels (fp32 depthwise), whose enlarged data no longer fits in cache."""
    names = {op.index: op.op_name for op in op_times}
    best = {cls: (macs / (ms * 1e6), f"op {index} {names[index]}, enlarged x{scale}")
            for (cls, (index, scale, macs)), ms in zip(enlarged.items(), enlarged_ms) if ms > 0}
    for op in op_times:
        if op.gmacs and op.ms >= RELIABLE_OVER_OVERHEAD * overhead_ms and op.gmacs > best.get(op.op_class, (0, ""))[0]:
            best[op.op_class] = (op.gmacs, f"op {op.index} {op.op_name}")
    return best


def _bandwidth(op_times: list[OpTime], overhead_ms: float) -> tuple[float | None, str | None]:
    """The best GB/s of a MAC-less op timed alone in this run (over RELIABLE_OVER_OVERHEAD invoke
    costs; a folded PAD's time is a difference, not a copy, so it does not count)."""
    timed = [op for op in op_times if op.gbs and op.folded_into is None
             and op.ms >= RELIABLE_OVER_OVERHEAD * overhead_ms]
    if not timed:
        return None, None
    best = max(timed, key=lambda op: op.gbs)
    return best.gbs, f"op {best.index} {best.op_name}"


# --- a phone's op profile ------------------------------------------------------------------------

def profile_from_op_profile(tflite_path: str | Path, rows: list[OpProfileRow], whole_ms: float | None,
                            threads: int, source: str) -> ProfileResult:
    """The same table from benchmark_model's op profile: rows matched to the model's ops
    (`attribution.attribute`); rows matched to no op are summed under 'other'."""
    tflite_path = Path(tflite_path)
    model = read_flatbuffer(tflite_path)
    ops = model_ops(tflite_path)
    graph_ops = model.subgraphs[0].operators
    per_op: dict[int, float] = {}
    unmatched = 0.0
    for attributed in attribute([r for r in rows if not is_partition_row(r)], ops):
        if attributed.op is None:
            unmatched += attributed.row.avg_ms
        else:
            per_op[attributed.op.index] = per_op.get(attributed.op.index, 0.0) + attributed.row.avg_ms
    op_times = [OpTime(op.index, op.op_name, op_class(op), op.outputs[0] if op.outputs else "",
                       op_macs(model, graph_ops[op.index]), per_op.get(op.index, 0.0)) for op in ops]
    if unmatched:
        op_times.append(OpTime(-1, "(unmatched XNNPACK rows)", OTHER, "", 0, unmatched))
    return ProfileResult(model_path=str(tflite_path), source=source, threads=threads, whole_ms=whole_ms,
                         ops=op_times, classes=class_times(op_times),
                         notes=["no ceilings: there is no single-op run on the phone"])


def load_op_profile(source: str | Path, tflite_path: str | Path) -> ProfileResult:
    """A phone's op profile from `mixdeploy bench --device ... --op-profile --json` output (the
    result whose model has the name of `tflite_path`) or from benchmark_model's own stdout."""
    import json

    from mixdeploy.bench.parse import BenchmarkParseError, parse_benchmark_output

    source = Path(source)
    if not source.is_file():
        raise MixdeployError(f"--from-op-profile {source}: no such file; save `mixdeploy bench FILE --device "
                             "pixel --op-profile --json` (or benchmark_model's output) there")
    text = source.read_text(errors="replace")
    try:
        bench = json.loads(text)
    except json.JSONDecodeError:
        try:
            parsed = parse_benchmark_output(text)
        except BenchmarkParseError as err:
            raise MixdeployError(f"{source} is neither `mixdeploy bench --json` output nor benchmark_model "
                                 f"output ({err})") from None
        rows, whole, threads, where = parsed.op_profile, parsed.median_ms, parsed.threads or 0, "benchmark_model"
    else:
        rows, whole, threads, where = _op_profile_from_bench_json(bench, Path(tflite_path).name, source)
    if not rows:
        raise MixdeployError(f"{source} has no op profile: run `mixdeploy bench FILE --device pixel --op-profile "
                             "--json` (or benchmark_model --enable_op_profiling=true)")
    return profile_from_op_profile(tflite_path, rows, whole, threads,
                                   f"op profile of {where} (benchmark_model --enable_op_profiling)")


def _op_profile_from_bench_json(bench, model_name: str, source: Path):
    results = bench.get("results", []) if isinstance(bench, dict) else []
    profiled = [r for r in results if isinstance(r, dict) and (r.get("benchmark") or {}).get("op_profile")]
    mine = [r for r in profiled if Path(str(r.get("model_path", ""))).name == model_name] or profiled[:1]
    if not mine:
        return [], None, 0, ""
    r = mine[0]
    rows = [OpProfileRow(**row) for row in r["benchmark"]["op_profile"]]
    inference = r["benchmark"].get("inference") or {}
    whole = inference.get("median_ms") if inference.get("median_ms") is not None else inference.get("avg_ms")
    device = (r.get("device") or {}).get("model") or "a phone"
    return rows, whole, int(r.get("threads") or 0), f"{device}, {r.get('delegate', '')}"
