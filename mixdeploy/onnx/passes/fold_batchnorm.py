"""fold_batchnorm: every inference BatchNormalization folded into the Conv(s) that feed it.

Besides the plain Conv -> BN, a MixConv (or a split 1x1) ends in Concat -> BN: channel
range [a, b) of that BN belongs to the Conv that produced those channels, so each Conv
gets its slice of the scale and shift. Why it matters: left as a per-channel MUL after
the CONCATENATION, the BN is quantized per-tensor after the concat and int8 MixNets
lose many points of top-1 (docs/rewrites.md, "The measurements").
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import (Namer, add_initializer, attr, const_array, conv_info, is_channel_axis,
                                  only_use, replace_value)
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions


def convs_feeding(value: ir.Value) -> list[tuple] | None:
    """[(ConvInfo, start, stop)] covering every channel of `value`, or None if not foldable."""
    producer = value.producer()
    if producer is None or only_use(value) is None:
        return None
    conv = conv_info(producer)
    if conv is not None:
        return [(conv, 0, conv.out_channels)]
    if producer.op_type != "Concat" or not is_channel_axis(attr(producer, "axis", 0)):
        return None
    parts, start = [], 0
    for branch in producer.inputs:
        conv = conv_info(branch.producer()) if branch.producer() is not None else None
        if conv is None or only_use(branch) is None:
            return None
        parts.append((conv, start, start + conv.out_channels))
        start += conv.out_channels
    return parts


def fold_batchnorm(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    outcome = PassOutcome(details={"left_unfolded": []})
    graph = model.graph
    namer = Namer(graph)
    bns = [n for n in graph if n.op_type == "BatchNormalization"]
    if not bns:
        outcome.decline(GRAPH, "no BatchNormalization in the graph")
    for bn in bns:
        params = [const_array(v) for v in bn.inputs[1:5]]
        parts = convs_feeding(bn.inputs[0])
        why = unfoldable(bn, params, parts)
        if why is not None:
            outcome.details["left_unfolded"].append(bn.name)
            outcome.decline(bn.name, why)
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + attr(bn, "epsilon", 1e-5))
        shift = beta - mean * scale
        for conv, start, stop in parts:
            fold_affine_into_conv(graph, namer, conv, scale[start:stop], shift[start:stop])
            outcome.touched.append(conv.node.name)
        replace_value(bn.outputs[0], bn.inputs[0])
        graph.remove(bn, safe=True)
        outcome.touched.append(bn.name)
    return outcome


def unfoldable(bn: ir.Node, params: list, parts: list | None) -> str | None:
    """Why `bn` cannot be folded into the Convs before it (None: it can)."""
    if any(list(v.uses()) for v in bn.outputs[1:]):
        return "its running mean/var outputs are read (training mode)"
    if any(p is None for p in params):
        return "its scale, bias, mean or var is computed, not a constant"
    if parts is None:
        return "its input is not a Conv's (or a channel Concat of Convs') output read by it alone"
    return None


def fold_affine_into_conv(graph, namer, conv, scale: np.ndarray, shift: np.ndarray) -> None:
    """conv(x) * scale + shift, per output channel, as new weights (never mutating shared initializers)."""
    dtype = conv.weight.dtype
    weight = (conv.weight.astype(np.float64) * scale[:, None, None, None]).astype(dtype)
    bias = conv.bias.astype(np.float64) if conv.bias is not None else np.zeros(conv.out_channels)
    bias = (bias * scale + shift).astype(dtype)
    node = conv.node
    node.replace_input_with(1, add_initializer(graph, namer, f"{node.name}.weight", weight))
    bias_value = add_initializer(graph, namer, f"{node.name}.bias", bias)
    if len(node.inputs) > 2:
        node.replace_input_with(2, bias_value)
    else:
        node.resize_inputs(3)
        node.replace_input_with(2, bias_value)
