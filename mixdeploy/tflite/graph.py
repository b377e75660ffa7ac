"""Trace an ONNX graph into a TensorFlow concrete function, activations laid out NHWC.

One pass in topological order (ONNX graphs are stored sorted): each node's handler from
`ops.OP_HANDLERS` receives its input `Value`s and returns output `Value`s. Initializers and
Constant nodes stay numpy arrays, so weights are transposed once, here, not at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.layout import NCHW_TO_NHWC, NHWC_TO_NCHW, Value

UNSUPPORTED_HINT = (
    "export the model with opset 17 (torch.onnx.export(..., dynamo=False, opset_version=17)) and "
    "simplify it with onnxsim, rewrite the node into supported ops (mixdeploy.onnx.rewrite), or open "
    "an issue with the node's op type"
)


@dataclass
class GraphInput:
    name: str
    nchw_shape: list[int]        # logical shape of the ONNX input
    tf_shape: list[int]          # shape of the TF/TFLite input (NHWC unless input_layout="nchw")
    dtype: np.dtype
    dynamic_batch: bool = False


@dataclass
class TracedGraph:
    concrete_function: object
    module: object               # keeps the tf.function (and its variables, if any) alive
    inputs: list[GraphInput]
    output_names: list[str]
    node_scopes: dict[str, str] = field(default_factory=dict)   # ONNX node name -> TF name scope


class ConversionContext:
    """What op handlers may need besides their inputs: attributes and the node's name."""

    def __init__(self, node: onnx.NodeProto, opset: int):
        self.node = node
        self.opset = opset
        self._attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def attr(self, name: str, default=None):
        value = self._attrs.get(name, default)
        return value.decode() if isinstance(value, bytes) else value

    def fail(self, why: str) -> MixdeployError:
        return MixdeployError(
            f"cannot convert ONNX node '{self.node.name}' ({self.node.op_type}): {why}; {UNSUPPORTED_HINT}")


def scope_name(node_name: str, index: int) -> str:
    """A valid TF name scope derived from the ONNX node name (TFLite tensor names keep it)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-/]", "_", node_name).strip("/") or f"node_{index}"
    cleaned = re.sub(r"/+", "/", cleaned)
    if not re.match(r"[A-Za-z0-9.]", cleaned):
        cleaned = f"n{cleaned}"
    return cleaned


def onnx_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 17


def traced_inputs(model: onnx.ModelProto, input_layout: str) -> list[GraphInput]:
    initializer_names = {init.name for init in model.graph.initializer}
    inputs = []
    for inp in model.graph.input:
        if inp.name in initializer_names:
            continue
        tensor_type = inp.type.tensor_type
        dims, dynamic_batch = [], False
        for i, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif i == 0:
                dims.append(1)   # a dynamic batch is traced as batch 1 (one image per phone inference)
                dynamic_batch = True
            else:
                raise MixdeployError(
                    f"ONNX input '{inp.name}' has a dynamic dimension {i} ('{dim.dim_param}'); "
                    "export with a fixed input size (only the batch may be dynamic)")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        tf_shape = [dims[i] for i in NCHW_TO_NHWC] if len(dims) == 4 and input_layout == "nhwc" else dims
        inputs.append(GraphInput(inp.name, dims, tf_shape, np.dtype(dtype), dynamic_batch))
    if not inputs:
        raise MixdeployError("the ONNX graph has no inputs; export it with an input tensor")
    return inputs


def check_supported(model: onnx.ModelProto) -> None:
    """Fail before any tracing, naming every node we cannot convert (not just the first)."""
    from mixdeploy.tflite.ops import OP_HANDLERS

    unsupported = [n for n in model.graph.node if n.domain not in ("", "ai.onnx") or n.op_type not in OP_HANDLERS]
    if unsupported:
        listed = ", ".join(f"'{n.name or '(unnamed)'}' ({n.op_type})" for n in unsupported[:10])
        more = f" and {len(unsupported) - 10} more" if len(unsupported) > 10 else ""
        raise MixdeployError(f"unsupported ONNX op(s): node {listed}{more}; {UNSUPPORTED_HINT}")


def trace_onnx(model: onnx.ModelProto, input_layout: str = "nhwc") -> TracedGraph:
    import tensorflow as tf

    from mixdeploy.tflite.ops import OP_HANDLERS

    check_supported(model)
    opset = onnx_opset(model)
    inputs = traced_inputs(model, input_layout)
    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    output_names = [o.name for o in model.graph.output]
    scopes = {node.name: scope_name(node.name, i) for i, node in enumerate(model.graph.node)}

    def run_graph(*tf_inputs):
        values: dict[str, Value] = {name: Value(array) for name, array in constants.items()}
        for spec, tensor in zip(inputs, tf_inputs):
            if len(spec.nchw_shape) == 4:
                if input_layout == "nchw":
                    # the one TRANSPOSE the caller asked for: NCHW in, NHWC everywhere after
                    tensor = tf.transpose(tensor, NCHW_TO_NHWC)
                values[spec.name] = Value(tensor, nhwc=True)
            else:
                values[spec.name] = Value(tensor)
        for i, node in enumerate(model.graph.node):
            ctx = ConversionContext(node, opset)
            missing = [name for name in node.input if name and name not in values]
            if missing:
                raise MixdeployError(
                    f"ONNX node '{node.name}' ({node.op_type}) reads '{missing[0]}', which no earlier node "
                    "produces: the graph is corrupt or not topologically sorted; re-export the model")
            node_inputs = [values[name] if name else None for name in node.input]
            with tf.name_scope(scopes[node.name] if node.name else f"node_{i}"):
                outputs = convert_node(ctx, node_inputs)
            for name, value in zip(node.output, outputs):
                values[name] = value
        # a dict names the TFLite outputs after the ONNX outputs (instead of 'PartitionedCall:0')
        return {safe_tensor_name(name, k, "output"): graph_output(values[name], input_layout)
                for k, name in enumerate(output_names)}

    def convert_node(ctx, node_inputs):
        try:
            return OP_HANDLERS[ctx.node.op_type](ctx, node_inputs)
        except MixdeployError:
            raise
        except (ValueError, TypeError, IndexError, KeyError) as err:
            # shape/attribute combinations the handler does not cover: name the node, not a TF trace
            raise ctx.fail(f"{type(err).__name__}: {str(err).splitlines()[0][:300]}") from err

    def graph_output(value: Value, layout: str):
        data = value.data if not value.is_const else tf.constant(value.data)
        if value.nhwc and layout == "nchw":
            data = tf.transpose(data, NHWC_TO_NCHW)
        return data

    signature = [tf.TensorSpec(spec.tf_shape, tf.as_dtype(spec.dtype), name=safe_tensor_name(spec.name, k, "input"))
                 for k, spec in enumerate(inputs)]
    module = tf.Module()
    module.run = tf.function(run_graph, input_signature=signature, autograph=False)
    concrete = module.run.get_concrete_function()
    return TracedGraph(concrete, module, inputs, output_names, scopes)


def safe_tensor_name(name: str, index: int, kind: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return cleaned if cleaned and cleaned[0].isalpha() else f"{kind}_{index}"
