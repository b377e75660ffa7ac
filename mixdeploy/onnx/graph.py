"""Small onnx-ir helpers shared by the rewrite passes.

Passes work on an `onnx_ir.Model` (a mutable graph with use lists), never on raw
protobufs: finding a node's consumers or replacing a value is one call there.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

CHANNEL_AXIS = 1  # NCHW everywhere in ONNX


def to_ir(model: onnx.ModelProto, infer: bool = True) -> ir.Model:
    # Shape inference first: passes need channel counts and spatial sizes of values
    # (infer=False for a model that just came out of to_proto, which inferred them).
    return ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model) if infer else model)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    RemoveUnusedNodesPass()(model)  # drops nodes and initializers a pass orphaned
    proto = ir.serde.serialize_model(model)
    return onnx.shape_inference.infer_shapes(proto)


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy array behind an initializer or a Constant node's output, else None."""
    if value is None:
        return None
    if value.const_value is not None:
        return value.const_value.numpy()
    producer = value.producer()
    if producer is not None and producer.op_type == "Constant" and "value" in producer.attributes:
        return producer.attributes["value"].value.numpy()
    return None


def attr(node: ir.Node, name: str, default=None):
    a = node.attributes.get(name)
    return default if a is None else a.value


def only_use(value: ir.Value) -> ir.Node | None:
    """The single consumer of `value` (as any input), or None if it has 0 or 2+ uses or is an output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def channels_of(value: ir.Value) -> int | None:
    shape = value.shape
    if shape is None or len(shape) < 2 or not isinstance(shape[CHANNEL_AXIS], int):
        return None
    return shape[CHANNEL_AXIS]


def spatial_of(value: ir.Value) -> tuple[int, int] | None:
    shape = value.shape
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        return None
    return int(shape[2]), int(shape[3])


def is_channel_axis(axis: int, rank: int = 4) -> bool:
    return axis == CHANNEL_AXIS or axis == CHANNEL_AXIS - rank


class Namer:
    """Unique, readable names for values and nodes a pass creates."""

    def __init__(self, graph: ir.Graph):
        self.used = {n.name for n in graph}
        for node in graph:
            self.used.update(v.name for v in node.outputs if v.name)
        self.used.update(v.name for v in graph.inputs)
        self.used.update(graph.initializers)

    def __call__(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name = f"{base}_{i}"
            i += 1
        self.used.add(name)
        return name


def add_initializer(graph: ir.Graph, namer: Namer, base: str, array: np.ndarray) -> ir.Value:
    array = np.ascontiguousarray(array)
    value = ir.Value(name=namer(base), shape=ir.Shape(array.shape),
                     type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array))
    graph.register_initializer(value)
    return value


def new_node(namer: Namer, name: str, op_type: str, inputs, attributes=None, num_outputs: int = 1) -> ir.Node:
    node = ir.Node("", op_type, inputs, attributes=_attrs(attributes or {}),
                   num_outputs=num_outputs, name=namer(name))
    for i, out in enumerate(node.outputs):
        out.name = namer(f"{node.name}_output_{i}" if num_outputs > 1 else f"{node.name}_output")
    return node


def add_to_sum(namer: Namer, name: str, total: ir.Value | None, value: ir.Value, new_nodes: list) -> ir.Value:
    """`total + value` (an Add appended to `new_nodes`), or `value` when there is no total yet:
    how partial convs (kernel pieces, branch pieces) are summed back into one output."""
    if total is None:
        return value
    add = new_node(namer, name, "Add", [total, value])
    new_nodes.append(add)
    return add.outputs[0]


def _attrs(d: dict) -> list[ir.Attr]:
    out = []
    for k, v in d.items():
        if isinstance(v, (list, tuple)) and all(isinstance(x, int) for x in v):
            out.append(ir.AttrInt64s(k, list(v)))
        elif isinstance(v, int):
            out.append(ir.AttrInt64(k, v))
        elif isinstance(v, float):
            out.append(ir.AttrFloat32(k, v))
        elif isinstance(v, str):
            out.append(ir.AttrString(k, v))
        else:
            raise TypeError(f"attribute {k}={v!r}")
    return out


def replace_value(old: ir.Value, new: ir.Value) -> None:
    """Route every use of `old` to `new`; a graph output keeps its public name."""
    was_output = old.is_graph_output()
    name = old.name
    ir.convenience.replace_all_uses_with(old, new, replace_graph_outputs=True)
    if was_output:
        old.name = f"{name}__replaced"
        new.name = name


@dataclass
class ConvInfo:
    """A Conv whose weights are constants and whose padding is explicit."""

    node: ir.Node
    weight: np.ndarray           # O, I/group, kH, kW
    bias: np.ndarray | None
    group: int
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]   # top, left, bottom, right
    dilations: tuple[int, int]

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def is_depthwise(self) -> bool:
        return self.weight.shape[1] == 1 and self.group == self.out_channels and self.group > 1

    @property
    def is_pointwise(self) -> bool:
        return (self.kernel == (1, 1) and self.strides == (1, 1) and self.pads == (0, 0, 0, 0)
                and self.dilations == (1, 1))


def conv_info(node: ir.Node) -> ConvInfo | None:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return None
    weight = const_array(node.inputs[1])
    if weight is None or weight.ndim != 4:
        return None
    bias = const_array(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if len(node.inputs) > 2 and node.inputs[2] is not None and bias is None:
        return None  # a computed bias: leave such convs alone
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
        return None
    pads = tuple(attr(node, "pads", [0, 0, 0, 0]))
    return ConvInfo(node=node, weight=weight, bias=bias, group=int(attr(node, "group", 1)),
                    strides=tuple(attr(node, "strides", [1, 1])),
                    pads=(pads[0], pads[1], pads[2], pads[3]),
                    dilations=tuple(attr(node, "dilations", [1, 1])))


def conv_attributes(group: int, strides, pads, dilations=(1, 1), kernel=None) -> dict:
    d = {"group": int(group), "strides": list(strides), "pads": list(pads), "dilations": list(dilations)}
    if kernel is not None:
        d["kernel_shape"] = list(kernel)
    return d


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))


def count_graph_macs(model: onnx.ModelProto, infer: bool = True) -> int:
    """Multiply-accumulates of Conv, Gemm and MatMul (the usual 'FLOPs' convention of papers)."""
    inferred = onnx.shape_inference.infer_shapes(model) if infer else model
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0
    for node in inferred.graph.node:
        if node.op_type == "Conv":
            out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and w and None not in out and None not in w:
                total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and None not in a and None not in out:
                trans_a = any(at.name == "transA" and at.i for at in node.attribute)
                k = a[-2] if trans_a else a[-1]
                total += int(np.prod(out)) * int(k)
    return total
