"""slices_to_split: a channel split written as Slice ops (fan-out or nested chain) becomes one Split.

Some exporters cut channels with x[:, a:b] (Slice) instead of torch.split; the passes after it
(recognize_mixconv, fuse_grouped_pointwise, lower_mixconv) then need to know one form only.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import Namer, add_initializer, channels_of, const_array, is_channel_axis, new_node, replace_value
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions

INT64_MAX = np.iinfo(np.int64).max


def channel_slice_range(node: ir.Node, channels: int) -> tuple[int, int] | None:
    """[start, stop) if `node` is a step-1 Slice of the channel axis only, else None."""
    if node.op_type != "Slice" or len(node.inputs) < 3:
        return None
    starts, ends = const_array(node.inputs[1]), const_array(node.inputs[2])
    axes = const_array(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] is not None else None
    steps = const_array(node.inputs[4]) if len(node.inputs) > 4 and node.inputs[4] is not None else None
    if starts is None or ends is None or starts.size != 1:
        return None
    if axes is None or axes.size != 1 or not is_channel_axis(int(axes.ravel()[0])):
        return None
    if steps is not None and int(steps.ravel()[0]) != 1:
        return None
    start, stop = int(starts.ravel()[0]), int(min(ends.ravel()[0], INT64_MAX))
    start = start + channels if start < 0 else start
    stop = stop + channels if stop < 0 else stop
    start, stop = max(0, min(start, channels)), max(0, min(stop, channels))
    return (start, stop) if stop > start else None


def leaf_slices(value: ir.Value, channels: int, offset: int = 0) -> list[tuple[int, int, ir.Node]] | None:
    """Every channel Slice hanging off `value`, following nested Slices, as absolute ranges."""
    leaves = []
    for use in value.uses():
        rng = channel_slice_range(use.node, channels)
        if rng is None or use.idx != 0:
            continue
        out = use.node.outputs[0]
        uses = list(out.uses())
        inner = [u for u in uses if channel_slice_range(u.node, rng[1] - rng[0]) and u.idx == 0]
        if uses and len(inner) == len(uses) and not out.is_graph_output():
            nested = leaf_slices(out, rng[1] - rng[0], offset + rng[0])
            if nested is None:
                return None
            leaves.extend(nested)
        else:
            leaves.append((offset + rng[0], offset + rng[1], use.node))
    return leaves


def slices_to_split(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    """Rewrite each full, non-overlapping set of channel Slices into one Split (touched: the new Splits)."""
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome()
    candidates = []
    for node in graph:
        if node.op_type == "Slice" and node.inputs[0] is not None:
            root = node.inputs[0]
            producer = root.producer()
            if producer is not None and producer.op_type == "Slice" and channel_slice_range(producer, channels_of(producer.inputs[0]) or 0):
                continue  # an inner link of a chain: handled from its root
            if root not in candidates:
                candidates.append(root)
    if not candidates:
        outcome.decline(GRAPH, "no Slice in the graph")
    for root in candidates:
        leaves, why = channel_cut(root)
        if why is not None:
            outcome.decline(root.name, why)
            continue
        bounds = [(a, b) for a, b, _ in leaves]
        first = leaves[0][2]
        sizes = add_initializer(graph, namer, f"{first.name}.split_sizes",
                                np.array([b - a for a, b in bounds], dtype=np.int64))
        split = new_node(namer, f"{first.name}/Split", "Split", [root, sizes], {"axis": 1},
                         num_outputs=len(leaves))
        # Right after the root's producer: every consumer of every leaf comes later.
        producer = root.producer()
        if producer is not None:
            graph.insert_after(producer, split)
        else:
            graph.insert_before(next(iter(graph)), split)
        for out, (_, _, leaf) in zip(split.outputs, leaves):
            out.shape = leaf.outputs[0].shape
            out.type = leaf.outputs[0].type
            replace_value(leaf.outputs[0], out)
        outcome.touched.append(split.name)
    return outcome


def channel_cut(root: ir.Value) -> tuple[list, str | None]:
    """The channel Slices of `root` sorted by start when they cut its channels into 2+ contiguous
    parts, else why not."""
    channels = channels_of(root)
    if channels is None:
        return [], "its channel count is unknown"
    leaves = leaf_slices(root, channels)
    if not leaves or len(leaves) < 2:
        return [], "its Slices do not cut the channel axis into 2+ parts"
    leaves.sort(key=lambda t: t[0])
    bounds = [(a, b) for a, b, _ in leaves]
    contiguous = bounds[0][0] == 0 and bounds[-1][1] == channels and all(
        bounds[i][1] == bounds[i + 1][0] for i in range(len(bounds) - 1))
    if not contiguous:
        return [], f"its channel Slices {bounds} do not cover its {channels} channels once, in order"
    return leaves, None
