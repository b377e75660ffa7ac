"""piece_pads: each piece of a decomposed kernel reads the unpadded input through its own Conv
pads, instead of a Slice of one shared, materialised Pad.

`decompose` writes Pad (once) -> per piece Slice (its window) -> unpadded Conv. In TFLite that is
a PAD that XNNPACK must run as a copy of the whole tensor (it has several consumers, so XNNPACK
cannot fuse it into one conv) plus one STRIDED_SLICE copy per piece. Here every such Conv reads the
Pad's input instead, with the window expressed as Conv pads where it reaches into the padding,
and as a crop (a Slice of the unpadded input) only where it starts or ends inside the input. A
Conv pad becomes its own single-consumer PAD in TFLite, which XNNPACK folds into the convolution
(free: measured in docs/rewrites.md). Exact: every Conv reads the same values as before.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import Namer, add_initializer, const_array, conv_info, new_node, spatial_of
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions
from mixdeploy.onnx.passes.fold_pad import spatial_zero_pads

Window = tuple[int, int, int, int]   # row start, row stop, col start, col stop (padded coordinates)


def spatial_window(node: ir.Node, padded_hw: tuple[int, int]) -> Window | None:
    """The [rows, cols] window a step-1 Slice of H and W (axes 2, 3) cuts, clamped; else None."""
    if node.op_type != "Slice" or len(node.inputs) < 4:
        return None
    starts, ends, axes = (const_array(v) for v in node.inputs[1:4])
    steps = const_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or axes is None or (steps is not None and np.any(steps != 1)):
        return None
    window = [0, padded_hw[0], 0, padded_hw[1]]
    for axis, start, stop in zip(axes.ravel(), starts.ravel(), ends.ravel()):
        axis = int(axis) % 4
        if axis not in (2, 3):
            return None
        size = padded_hw[axis - 2]
        start, stop = (int(v) + size if v < 0 else int(v) for v in (start, min(stop, size)))
        window[2 * (axis - 2)], window[2 * (axis - 2) + 1] = max(start, 0), min(stop, size)
    return tuple(window)


def unpadded_convs(value: ir.Value) -> list[ir.Node] | None:
    """The Convs reading `value` as their input, with no pads of their own; None if any other use."""
    convs = []
    for use in value.uses():
        conv = conv_info(use.node)
        if conv is None or use.idx != 0 or any(conv.pads):
            return None
        convs.append(use.node)
    return None if value.is_graph_output() else convs


def crop_and_pads(window: Window, pads: tuple[int, int, int, int], hw: tuple[int, int]):
    """The same window in unpadded coordinates: (crop of the input, Conv pads top/left/bottom/right)."""
    t, l = pads[0], pads[1]
    rows = (window[0] - t, window[1] - t)
    cols = (window[2] - l, window[3] - l)
    crop = (max(rows[0], 0), min(rows[1], hw[0]), max(cols[0], 0), min(cols[1], hw[1]))
    conv_pads = (max(-rows[0], 0), max(-cols[0], 0), max(rows[1] - hw[0], 0), max(cols[1] - hw[1], 0))
    return crop, conv_pads


def keep_trailing_input(crop, conv_pads, hw, convs):
    """The crop without its bottom/right cut where no conv would read the rows/columns it cuts
    (a strided conv ignores input past its last window): one Slice fewer."""
    def same_output(rows: int, cols: int) -> bool:
        for node in convs:
            conv = conv_info(node)
            for size, start, before, after, k, s, d, axis in zip(
                    (rows, cols), crop[::2], conv_pads[:2], conv_pads[2:], conv.kernel, conv.strides, conv.dilations,
                    (2, 3)):
                expected = node.outputs[0].shape[axis] if node.outputs[0].shape is not None else None
                if not isinstance(expected, int) or (size - start + before + after - d * (k - 1) - 1) // s + 1 != expected:
                    return False
        return True

    r0, r1, c0, c1 = crop
    if r1 < hw[0] and same_output(hw[0], c1):
        r1 = hw[0]
    if c1 < hw[1] and same_output(r1, hw[1]):
        c1 = hw[1]
    return r0, r1, c0, c1


def piece_pads(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome(details={"pads_removed": 0, "slices_removed": 0, "crops": 0})
    pads = [n for n in graph if n.op_type == "Pad"]
    if not pads:
        outcome.decline(GRAPH, "no Pad in the graph")
    for pad in pads:
        spatial, x = spatial_zero_pads(pad), pad.inputs[0]
        hw = spatial_of(x)
        if spatial is None or hw is None:
            outcome.decline(pad.name, "not a constant-zero Pad of H and W only" if spatial is None
                            else "its input's H and W are not known")
            continue
        padded_hw = (hw[0] + spatial[0] + spatial[2], hw[1] + spatial[1] + spatial[3])
        readers, why_not = _readers(pad.outputs[0], padded_hw)
        if readers is None:
            outcome.decline(pad.name, why_not)
            continue
        crops = [crop_and_pads(window, spatial, hw) for window, _, _ in readers]
        if any(r0 >= r1 or c0 >= c1 for (r0, r1, c0, c1), _ in crops):
            outcome.decline(pad.name, "a reader's window is nothing but padding: no input to crop")
            continue
        for (_, convs, old_slice), (crop, conv_pads) in zip(readers, crops):
            crop = keep_trailing_input(crop, conv_pads, hw, convs)
            source = x
            if crop != (0, hw[0], 0, hw[1]):
                source = _crop(graph, namer, x, crop, before=old_slice or pad)
                outcome.details["crops"] += 1
            for conv in convs:
                conv.attributes["pads"] = ir.AttrInt64s("pads", list(conv_pads))
                conv.replace_input_with(0, source)
                outcome.touched.append(conv.name)
            if old_slice is not None:
                graph.remove(old_slice, safe=True)
                outcome.details["slices_removed"] += 1
        graph.remove(pad, safe=True)
        outcome.details["pads_removed"] += 1
    return outcome


def _readers(padded: ir.Value, padded_hw: tuple[int, int]):
    """([(window, Convs reading it, the Slice cutting it or None)], "") if every use of the padded
    tensor is an unpadded Conv or a window Slice feeding only unpadded Convs; else (None, why not)."""
    if padded.is_graph_output():
        return None, "the padded tensor is a graph output"
    readers = []
    for use in padded.uses():
        node = use.node
        conv = conv_info(node)
        if conv is not None and use.idx == 0 and not any(conv.pads):
            readers.append(((0, padded_hw[0], 0, padded_hw[1]), [node], None))
            continue
        window = spatial_window(node, padded_hw) if use.idx == 0 and conv is None else None
        convs = unpadded_convs(node.outputs[0]) if window else None
        if not convs:
            return None, (f"read by {node.op_type} {node.name}: not an unpadded Conv's input, nor an H/W window "
                          "Slice read only by unpadded Convs")
        readers.append((window, convs, node))
    return (readers, "") if readers else (None, "the padded tensor is not read")


def _crop(graph: ir.Graph, namer: Namer, x: ir.Value, crop: tuple[int, int, int, int], before: ir.Node) -> ir.Value:
    r0, r1, c0, c1 = crop
    base = f"{before.name}/crop"
    starts = add_initializer(graph, namer, f"{base}.starts", np.array([r0, c0], np.int64))
    ends = add_initializer(graph, namer, f"{base}.ends", np.array([r1, c1], np.int64))
    axes = add_initializer(graph, namer, f"{base}.axes", np.array([2, 3], np.int64))
    node = new_node(namer, base, "Slice", [x, starts, ends, axes])
    graph.insert_before(before, node)
    return node.outputs[0]
