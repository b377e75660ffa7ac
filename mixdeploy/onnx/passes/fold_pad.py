"""fold_pad: a constant-zero Pad on the spatial dims in front of a Conv becomes the Conv's pads.

TF-"same" models (timm tf_mixnet_*) pad stride-2 convs asymmetrically with a Pad node;
ONNX Conv takes asymmetric pads itself, so the Pad disappears.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import attr, const_array, conv_info
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions


def spatial_zero_pads(pad: ir.Node) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) if `pad` is a constant-mode zero Pad of H and W only, else None."""
    mode = attr(pad, "mode", "constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    pads = const_array(pad.inputs[1]) if len(pad.inputs) > 1 else attr(pad, "pads")
    if pads is None:
        return None
    pads = np.asarray(pads, dtype=np.int64).ravel()
    if len(pad.inputs) > 2 and pad.inputs[2] is not None:
        value = const_array(pad.inputs[2])
        if value is None or np.any(value != 0):
            return None
    elif attr(pad, "value", 0.0) != 0.0:
        return None
    rank = len(pads) // 2
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:  # opset 18 'axes': expand to all dims
        axes = const_array(pad.inputs[3])
        if axes is None:
            return None
        full = np.zeros(8, dtype=np.int64)
        for i, axis in enumerate(np.asarray(axes).ravel()):
            axis = int(axis) % 4
            full[axis], full[axis + 4] = pads[i], pads[i + len(axes)]
        pads, rank = full, 4
    if rank != 4 or np.any(pads < 0):
        return None
    begin, end = pads[:4], pads[4:]
    if begin[0] or begin[1] or end[0] or end[1]:
        return None  # padding batch or channels is not a Conv's business
    return int(begin[2]), int(begin[3]), int(end[2]), int(end[3])


def fold_pad(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    outcome = PassOutcome()
    graph = model.graph
    pads = [n for n in graph if n.op_type == "Pad"]
    if not pads:
        outcome.decline(GRAPH, "no Pad in the graph")
    for pad in pads:
        spatial = spatial_zero_pads(pad)
        if spatial is None:
            outcome.decline(pad.name, "not a constant-zero Pad of H and W only: a Conv cannot take it as its pads")
            continue
        padded = pad.outputs[0]
        if padded.is_graph_output() or not list(padded.uses()):
            outcome.decline(pad.name, "its output is a graph output" if padded.is_graph_output()
                            else "its output is not read")
        for use in list(padded.uses()):
            conv = conv_info(use.node)
            if conv is None or use.idx != 0:
                outcome.decline(pad.name, f"read by {use.node.op_type} {use.node.name}, not as a Conv's input")
                continue
            t, l, b, r = spatial
            new_pads = [conv.pads[0] + t, conv.pads[1] + l, conv.pads[2] + b, conv.pads[3] + r]
            conv.node.attributes["pads"] = ir.AttrInt64s("pads", new_pads)
            conv.node.replace_input_with(0, pad.inputs[0])
            outcome.touched.append(conv.node.name)
        if not list(padded.uses()) and not padded.is_graph_output():
            graph.remove(pad, safe=True)
    return outcome
