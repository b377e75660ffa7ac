"""Read a .tflite flatbuffer and report what matters for speed and int8 accuracy.

Op histogram, tensor types, I/O details, CONCATENATION input vs output scales (TFLite forces
one scale on a concat; a mismatch means a requantize or a branch squeezed into a coarse scale),
depthwise convs over 25 taps (off XNNPACK's fast depthwise path: its depthwise kernels
go up to 25 taps, so 5x5 and 7x3 are fast, 7x7 is not), TRANSPOSE count.
The flatbuffer is parsed with the schema bindings shipped in ai-edge-litert (no interpreter needed).
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mixdeploy.errors import MixdeployError
from mixdeploy.onnx.lowering import MAX_FAST_TAPS

SCALE_RTOL = 1e-6


@dataclass
class ConcatScales:
    output: str
    input_scales: list[float | None]
    output_scale: float | None
    mismatched: bool


@dataclass
class TfliteInspection:
    path: str
    file_size: int
    op_histogram: dict[str, int]
    tensor_dtypes: dict[str, int]
    inputs: list[dict]
    outputs: list[dict]
    concatenations: list[ConcatScales] = field(default_factory=list)
    large_depthwise: list[dict] = field(default_factory=list)     # kernel over 25 taps
    grouped_convs: list[dict] = field(default_factory=list)       # CONV_2D with 1 < groups
    transpose_count: int = 0

    @property
    def mismatched_concats(self) -> int:
        return sum(c.mismatched for c in self.concatenations)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mismatched_concats"] = self.mismatched_concats
        return d


def tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # older installs: TensorFlow ships the same bindings
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@functools.lru_cache(maxsize=1)
def builtin_op_names() -> dict[int, str]:
    """TFLite builtin operator code -> name (CONV_2D, ...), built once."""
    return _enum_names(tflite_schema().BuiltinOperator)


@functools.lru_cache(maxsize=1)
def tensor_type_names() -> dict[int, str]:
    """TFLite TensorType value -> name (INT8, FLOAT32, ...), built once."""
    return _enum_names(tflite_schema().TensorType)


def op_name(model, op) -> str:
    """The builtin name of `op` in a ModelT (unpacked flatbuffer), '?' for a code this schema lacks."""
    code = model.operatorCodes[op.opcodeIndex]
    return builtin_op_names().get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")


def read_model(path: Path):
    schema = tflite_schema()
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise MixdeployError(f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier); "
                             "pass a .tflite file written by `mixdeploy export`")
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
        if not model.subgraphs:
            raise ValueError("no subgraphs")
    except Exception as err:
        raise MixdeployError(f"{path} is a truncated or corrupt TFLite file (its flatbuffer does not parse); "
                             "export it again") from err
    return model, len(data)


def op_tensor_names(flatbuffer: bytes) -> list[tuple[list[str], list[str]]]:
    """Per operator (subgraph 0, execution order): (output tensor names, names of all its tensors).

    An op that produces a graph output has its output renamed after the signature
    ('PartitionedCall:0'); its weights still carry the name of the layer they came from.
    """
    schema = tflite_schema()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    graph = model.subgraphs[0]
    result = []
    for op in graph.operators or []:
        outputs = [tensor_name(graph.tensors[i]) for i in op.outputs]
        inputs = [tensor_name(graph.tensors[i]) for i in op.inputs if i >= 0]
        result.append((outputs, outputs + inputs))
    return result


def inspect_tflite(path) -> TfliteInspection:
    path = Path(path)
    if not path.is_file():
        raise MixdeployError(f"no such file: {path}")
    model, size = read_model(path)
    try:
        return _inspect(model, path, size)
    except (IndexError, KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as err:
        # a flatbuffer that parses but whose graph names tensors or op codes that do not exist
        raise MixdeployError(f"{path} is a corrupt TFLite file (its graph refers to tensors or operators that "
                             "are not in it); export it again") from err


def _inspect(model, path: Path, size: int) -> TfliteInspection:
    schema = tflite_schema()
    op_names = builtin_op_names()
    type_names = tensor_type_names()

    def op_name(opcode_index: int) -> str:
        code = model.operatorCodes[opcode_index]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        if builtin == schema.BuiltinOperator.CUSTOM:
            return f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        return op_names.get(builtin, str(builtin))

    ops, dtypes = Counter(), Counter()
    concats, large_dw, grouped = [], [], []
    for graph in model.subgraphs:
        tensors = graph.tensors
        for t in tensors:
            dtypes[type_names.get(t.type, str(t.type))] += 1
        for op in graph.operators or []:
            name = op_name(op.opcodeIndex)
            ops[name] += 1
            if name == "CONCATENATION":
                concats.append(concat_scales(tensors, op))
            elif name == "DEPTHWISE_CONV_2D":
                kh, kw = tensor_shape(tensors[op.inputs[1]])[1:3]
                if kh * kw > MAX_FAST_TAPS:
                    large_dw.append({"output": tensor_name(tensors[op.outputs[0]]), "kernel": [kh, kw]})
            elif name == "CONV_2D":
                in_channels = tensor_shape(tensors[op.inputs[0]])[-1]
                filter_in = tensor_shape(tensors[op.inputs[1]])[-1]
                if filter_in and in_channels != filter_in:
                    grouped.append({"output": tensor_name(tensors[op.outputs[0]]),
                                    "groups": in_channels // filter_in})
    main = model.subgraphs[0]
    return TfliteInspection(
        path=str(path), file_size=size, op_histogram=dict(ops.most_common()),
        tensor_dtypes=dict(dtypes.most_common()),
        inputs=[io_details(main.tensors[i], type_names) for i in main.inputs],
        outputs=[io_details(main.tensors[i], type_names) for i in main.outputs],
        concatenations=concats, large_depthwise=large_dw, grouped_convs=grouped,
        transpose_count=ops.get("TRANSPOSE", 0))


def tensor_name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def tensor_shape(tensor) -> list[int]:
    return [int(d) for d in (tensor.shape if tensor.shape is not None else [])]


def tensor_scale(tensor) -> float | None:
    q = tensor.quantization
    if q is None or q.scale is None or len(q.scale) == 0:
        return None
    return float(q.scale[0])


def io_details(tensor, type_names) -> dict:
    q = tensor.quantization
    zero_point = None if q is None or q.zeroPoint is None or len(q.zeroPoint) == 0 else int(q.zeroPoint[0])
    return {"name": tensor_name(tensor), "shape": tensor_shape(tensor),
            "dtype": type_names.get(tensor.type, str(tensor.type)).lower(),
            "scale": tensor_scale(tensor), "zero_point": zero_point}


def concat_scales(tensors, op) -> ConcatScales:
    in_scales = [tensor_scale(tensors[i]) for i in op.inputs]
    out_scale = tensor_scale(tensors[op.outputs[0]])
    mismatched = out_scale is not None and any(
        s is not None and not np.isclose(s, out_scale, rtol=SCALE_RTOL, atol=0) for s in in_scales)
    return ConcatScales(tensor_name(tensors[op.outputs[0]]), in_scales, out_scale, bool(mismatched))
