"""Params and MACs of a torch module or an ONNX graph, per stage and per op type.

Convention (the same for torch and ONNX, op types named as in ONNX):
  * Conv, Gemm/MatMul: one multiply-accumulate per weight use,
    i.e. output elements x (input channels / groups) x kh x kw for a conv, M x N x K for a matmul;
  * every arithmetic op between them — BatchNormalization, Relu, Swish (Sigmoid+Mul pair,
    torch's SiLU), Sigmoid, Mul, Add, ReduceMean, GlobalAveragePool, ... — one op per OUTPUT element;
  * data movement (Split, Concat, Pad, Reshape, Flatten, Transpose) costs nothing.
`total` is the sum of both; `conv_linear_only` is the first part alone (the number a
"conv + linear forward hooks" counter prints). At 224x224 this lands within 3% of the MixConv
paper's 256M / 360M / 565M for MixNet-S/M/L; conv+linear alone is 6-7% under for S and M
(see docs/models.md for the measured numbers).

A graph with BatchNormalization folded into the preceding Conv (what our ONNX export does
where it can) computes, and so counts, fewer elementwise ops than the torch module.
"""

from __future__ import annotations

import ast
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mixdeploy.errors import MixdeployError

CONV_LINEAR_OPS = ("Conv", "Gemm", "MatMul")
# Top-level module names whose dotted paths, used as ONNX node names, attribute a node to a stage.
KNOWN_TOP_MODULES = {"conv_stem", "bn1", "blocks", "conv_head", "bn2", "global_pool", "classifier",
                     "features", "layers", "stages", "stem", "head", "fc"}

# aten op -> ONNX-style op type, for ops counted as one op per output element.
_ATEN_ELEMENTWISE = {
    "native_batch_norm": "BatchNormalization", "_native_batch_norm_legit_no_training": "BatchNormalization",
    "_native_batch_norm_legit": "BatchNormalization", "batch_norm": "BatchNormalization",
    "relu": "Relu", "relu_": "Relu", "relu6": "Clip", "hardtanh": "Clip", "hardtanh_": "Clip",
    "clamp": "Clip", "clamp_": "Clip",
    "silu": "Swish", "silu_": "Swish", "sigmoid": "Sigmoid", "sigmoid_": "Sigmoid",
    "hardswish": "HardSwish", "hardswish_": "HardSwish", "hardsigmoid": "HardSigmoid", "hardsigmoid_": "HardSigmoid",
    "gelu": "Gelu", "tanh": "Tanh", "mish": "Mish", "softmax": "Softmax", "_softmax": "Softmax",
    "mul": "Mul", "mul_": "Mul", "add": "Add", "add_": "Add", "sub": "Sub", "div": "Div", "div_": "Div",
    "mean": "ReduceMean", "_adaptive_avg_pool2d": "GlobalAveragePool", "adaptive_avg_pool2d": "GlobalAveragePool",
    "avg_pool2d": "AveragePool", "max_pool2d_with_indices": "MaxPool", "max_pool2d": "MaxPool",
    "native_layer_norm": "LayerNormalization",
}
_ONNX_ELEMENTWISE = {
    "BatchNormalization", "Relu", "Clip", "Sigmoid", "HardSwish", "HardSigmoid", "Gelu", "Tanh", "Mish",
    "Softmax", "Mul", "Add", "Sub", "Div", "ReduceMean", "GlobalAveragePool", "AveragePool", "MaxPool",
    "LayerNormalization", "PRelu", "LeakyRelu", "Elu", "Selu", "Swish", "Erf", "Sqrt", "Pow", "Exp",
}

CONVENTION = ("conv/linear multiply-accumulates + one op per output element of BN, activations "
              "(SiLU/swish counted once), SE/elementwise mul/add and pooling; data movement free")


@dataclass
class MacReport:
    total: int                                  # conv/linear MACs + elementwise ops
    params: int
    by_stage: dict[str, int] = field(default_factory=dict)      # stage -> total
    by_op_type: dict[str, int] = field(default_factory=dict)    # ONNX op type -> total
    conv_linear_only: int = 0
    input_size: int = 224
    source: str = ""
    convention: str = CONVENTION

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "input_size": self.input_size, "params": self.params,
                "macs": self.total, "conv_linear_macs": self.conv_linear_only,
                "by_stage": self.by_stage, "by_op_type": self.by_op_type, "convention": self.convention}


STEM_MODULES, HEAD_MODULES = {"conv_stem", "bn1"}, {"conv_head", "bn2", "global_pool"}
STAGE_CONTAINERS = {"blocks", "features", "layers", "stages"}  # children of these are the stages


def stage_of(scopes: list[str]) -> str:
    """The stage a module path belongs to.

    `scopes` is a module path as exporters write it: ['blocks.2.0.conv_dw'],
    ['blocks', 'blocks.2', 'blocks.2.0', 'conv_pw'] or ['conv_stem'].
    MixNet/EfficientNet: stem (conv_stem, bn1), blocks.0..N, head (conv_head, bn2, pool),
    classifier; anything else: its top-level child (e.g. layer1 of a ResNet).
    """
    scopes = [s for s in scopes if s]
    if not scopes:
        return "other"
    first = scopes[0]
    if "." not in first and len(scopes) > 1 and scopes[1].startswith(first + "."):
        first = scopes[1]  # ['blocks', 'blocks.2', ...]: the second scope carries the index
    parts = first.split(".")
    if parts[0] in STEM_MODULES:
        return "stem"
    if parts[0] in HEAD_MODULES:
        return "head"
    if parts[0] in STAGE_CONTAINERS and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _sorted_stages(counter: Counter) -> dict[str, int]:
    def key(name):
        order = {"stem": (0, 0), "head": (2, 0), "classifier": (3, 0), "other": (4, 0)}
        m = re.match(r".*\.(\d+)$", name)
        return order.get(name, (1, int(m.group(1)) if m else 0))
    return {k: int(counter[k]) for k in sorted(counter, key=key)}


# ---------------------------------------------------------------- torch

class _OpCounter(TorchDispatchMode):
    """Counts MACs/elementwise ops of every aten op that runs, attributed to the current stage."""

    def __init__(self):
        super().__init__()
        self.stage = "other"
        self.by_stage: Counter[str] = Counter()
        self.by_op: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        op_type, count = _aten_cost(func.overloadpacket.__name__, args, out)
        if count:
            self.by_op[op_type] += count
            self.by_stage[self.stage] += count
        return out


def _aten_cost(name: str, args, out) -> tuple[str, int]:
    first = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(first, torch.Tensor):
        return "", 0
    if name in ("convolution", "_convolution", "conv2d"):
        weight = args[1]
        return "Conv", first.numel() * int(np.prod(weight.shape[1:]))
    if name in ("addmm",):
        return "Gemm", first.numel() * args[1].shape[-1]
    if name in ("mm", "bmm", "matmul"):
        return "MatMul", first.numel() * args[0].shape[-1]
    if name in _ATEN_ELEMENTWISE:
        return _ATEN_ELEMENTWISE[name], first.numel()
    return "", 0


def _stage_hooks(module: nn.Module, counter: _OpCounter) -> list:
    """Pre/post hooks that keep `counter.stage` on the stage of the module now running:
    every top-level child, and the children of stage containers (blocks.0, blocks.1, ...)."""
    handles, stack = [], []

    def enter(stage):
        def pre(_m, _i):
            stack.append(counter.stage)
            counter.stage = stage
        return pre

    def leave(_m, _i, _o):
        counter.stage = stack.pop()

    for qualname, sub in module.named_modules():
        parts = qualname.split(".")
        is_stage = len(parts) == 1 or (len(parts) == 2 and parts[0] in STAGE_CONTAINERS)
        if qualname and is_stage:
            handles += [sub.register_forward_pre_hook(enter(stage_of([qualname]))),
                        sub.register_forward_hook(leave)]
    return handles


def _run_counted(module: nn.Module, shape: tuple[int, ...]) -> _OpCounter:
    """One real forward pass of a zero image under the counter. (Shape-only fake tensors were
    tried: their first use in a process costs ~3 s against ~0.1 s for a real MixNet-S pass at 224.)"""
    counter = _OpCounter()
    handles = _stage_hooks(module, counter)
    try:
        with torch.no_grad(), counter:
            module(torch.zeros(shape))
    finally:
        for h in handles:
            h.remove()
    return counter


def count_macs_torch(module: nn.Module, input_size: int = 224, in_channels: int = 3) -> MacReport:
    was_training = module.training
    module.eval()
    try:
        counter = _run_counted(module, (1, in_channels, input_size, input_size))
    finally:
        module.train(was_training)
    return _report(counter.by_stage, counter.by_op, sum(p.numel() for p in module.parameters()),
                   input_size, type(module).__name__)


def _report(by_stage: Counter, by_op: Counter, params: int, input_size: int, source: str) -> MacReport:
    return MacReport(total=int(sum(by_op.values())), params=int(params), by_stage=_sorted_stages(by_stage),
                     by_op_type=dict(by_op.most_common()),
                     conv_linear_only=int(sum(v for k, v in by_op.items() if k in CONV_LINEAR_OPS)),
                     input_size=input_size, source=source)


# ---------------------------------------------------------------- ONNX

def count_macs_onnx(model, input_size: int | None = None) -> MacReport:
    """Walk Conv/Gemm/MatMul and elementwise nodes of an ONNX model (path or ModelProto).

    Shapes come from onnx shape inference after fixing batch=1 and, for symbolic or explicitly
    requested spatial sizes, H=W=input_size.
    """
    import onnx

    from mixdeploy.onnx import load_onnx

    source = str(model) if not isinstance(model, onnx.ModelProto) else (model.graph.name or "onnx model")
    proto = load_onnx(model, input_size) if not isinstance(model, onnx.ModelProto) else model
    proto, input_size = _with_static_input(proto, input_size)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as err:
        raise MixdeployError(f"ONNX shape inference failed on {source} ({err}); simplify it with onnxsim first.") from err
    shapes = _value_shapes(inferred)
    producers = {out: node for node in inferred.graph.node for out in node.output}
    swish_muls = _swish_muls(inferred.graph, producers)
    by_stage, by_op = Counter(), Counter()
    for node in inferred.graph.node:
        op_type, count = _onnx_cost(node, shapes, swish_muls)
        if node.op_type == "Sigmoid" and any(node.output[0] in m.input for m in swish_muls.values()):
            continue  # the Sigmoid of a swish is counted with its Mul, as one Swish op
        if count:
            by_op[op_type] += count
            by_stage[stage_of(_onnx_scopes(node))] += count
    return _report(by_stage, by_op, _onnx_params(inferred), input_size, source)


def _with_static_input(proto, input_size: int | None):
    import onnx

    from mixdeploy.onnx import graph_inputs

    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never mutate the caller's model
    inputs = graph_inputs(proto)
    if len(inputs) != 1:
        raise MixdeployError(f"flops expects an image model with one input, this graph has {len(inputs)}.")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise MixdeployError(f"flops expects a 4-D image input, got rank {len(dims)}.")
    dims[0].dim_value = 1
    channels_first = not (dims[3].HasField("dim_value") and dims[3].dim_value in (1, 3))
    spatial = (dims[2], dims[3]) if channels_first else (dims[1], dims[2])
    static = [d.dim_value for d in spatial if d.HasField("dim_value")]
    if len(static) == 2 and input_size is not None and static != [input_size, input_size]:
        raise MixdeployError(f"this ONNX graph has a fixed input size {static[0]}x{static[1]}; "
                             f"omit --input-size or re-export at {input_size}.")
    if len(static) == 2:
        return proto, static[0]
    size = input_size or 224
    for d in spatial:
        d.dim_value = size
    return proto, size


def _value_shapes(proto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for vi in list(proto.graph.value_info) + list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _swish_muls(graph, producers) -> dict[str, Any]:
    """Mul(x, Sigmoid(x)) nodes (how exporters write SiLU) by output name."""
    found = {}
    for node in graph.node:
        if node.op_type != "Mul" or len(node.input) != 2:
            continue
        for a, b in (node.input, node.input[::-1]):
            sig = producers.get(b)
            if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a:
                found[node.output[0]] = node
    return found


def _numel(shapes, name) -> int:
    shape = shapes.get(name)
    if shape is None:
        raise MixdeployError(f"ONNX shape inference left {name!r} without a static shape; "
                             f"simplify the graph with onnxsim (static input size) and retry.")
    return int(np.prod(shape)) if shape else 1


def _onnx_cost(node, shapes, swish_muls) -> tuple[str, int]:
    if node.op_type == "Conv":
        weight = shapes.get(node.input[1])
        if weight is None:
            raise MixdeployError(f"Conv {node.name!r}: weight shape unknown; simplify the graph with onnxsim.")
        return "Conv", _numel(shapes, node.output[0]) * int(np.prod(weight[1:]))
    if node.op_type in ("Gemm", "MatMul"):
        a = shapes.get(node.input[0])
        trans_a = any(att.name == "transA" and att.i for att in node.attribute)
        k = a[-2] if trans_a else a[-1]
        return node.op_type, _numel(shapes, node.output[0]) * int(k)
    if node.op_type == "Mul" and node.output[0] in swish_muls:
        return "Swish", _numel(shapes, node.output[0])
    if node.op_type in _ONNX_ELEMENTWISE:
        return node.op_type, _numel(shapes, node.output[0])
    return "", 0


def _onnx_scopes(node) -> list[str]:
    """Module path of a node: torch.onnx (dynamo) name_scopes metadata, or TorchScript-style names."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                return [s for s in ast.literal_eval(prop.value)[:-1] if s]
            except (ValueError, SyntaxError):
                break
    if node.name.startswith("/"):  # TorchScript exporter: /blocks/blocks.2/blocks.2.0/conv_pw/Conv
        return [s for s in node.name.split("/")[1:-1] if s]
    path = node.name.split("/")[0]  # mixdeploy's export renames nodes to module paths: blocks.2.0.conv_dw.1
    if path.split(".")[0] in KNOWN_TOP_MODULES:
        return [path]
    return []


def _onnx_params(proto) -> int:
    import onnx

    float_types = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                   onnx.TensorProto.DOUBLE, onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    return int(sum(np.prod(i.dims) for i in proto.graph.initializer if i.data_type in float_types))


# ---------------------------------------------------------------- entry point

def count_macs(model_or_onnx_path, input_size: int | None = None, *, weights=None,
               num_classes: int | None = None) -> MacReport:
    """Params and MACs of an nn.Module, a LoadedModel, an onnx.ModelProto, a .onnx path or a model name.

    input_size: square side; default 224 for torch, the graph's own size for a static ONNX graph,
    the model's default preprocessing size for a registry name. weights, num_classes: for a model
    name, what load_model loads it with.
    """
    from mixdeploy.models.sources import LoadedModel, load_model

    target = model_or_onnx_path
    if isinstance(target, (str, os.PathLike)) and str(target).lower().endswith(".onnx"):
        return count_macs_onnx(target, input_size)
    if type(target).__name__ == "ModelProto":
        return count_macs_onnx(target, input_size)
    if isinstance(target, (str, os.PathLike)):
        target = load_model(str(target), weights=weights, num_classes=num_classes, input_size=input_size)
    if isinstance(target, LoadedModel) and target.module is None:   # an ONNX source
        report = count_macs_onnx(target.onnx_model, input_size)
        report.source = target.name
        return report
    if isinstance(target, LoadedModel):
        report = count_macs_torch(target.module, input_size or target.preprocessing.input_size)
        report.source = target.name
        return report
    if isinstance(target, nn.Module):
        return count_macs_torch(target, input_size or 224)
    raise TypeError(f"count_macs: unsupported {type(target).__name__}")


def budget_verdict(report: MacReport, max_macs: int | None) -> dict:
    """`flops --json`: the report, the budget and whether the model is within it (no budget: it is)."""
    return {**report.to_dict(), "max_macs": max_macs, "within_budget": max_macs is None or report.total <= max_macs}
