"""concat_free: a channel Concat (a MixConv's branches) pushed down to the convs that read it.

TFLite's int8 quantizer gives every CONCATENATION input the output's one scale, so a MixConv
branch whose range is smaller than its neighbours' loses resolution. Here the Concat goes: every
per-channel op after it (swish, Relu, the SE's spatial mean, a Mul by the SE gate) runs once per
branch, and each Conv that reads the concatenated channels becomes one partial Conv per branch
over that branch's input channels (weights split by input channel, bias once), summed with Add.
Every branch keeps its own int8 scale until the sum. The function is unchanged (linearity).

A region is rewritten only when it closes: every consumer of every concatenated value is one of
the ops below, and none is a graph output. Otherwise the Concat stays (reported as skipped).

A grouped Conv (MixNet's `p1.1` conv_pwl, group=2) is cut along its groups: per group, the
partial convs of the branch pieces inside it, summed; the groups' sums are concatenated. That
Concat joins conv outputs that the next op reads as one tensor anyway (one scale either way), and
costs no extra MACs (a dense expansion of the grouped conv would double them). A branch that
straddles a group boundary is split there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import (Namer, add_initializer, add_to_sum, attr, channels_of, const_array, conv_attributes,
                                  conv_info, is_channel_axis, new_node, replace_value)
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions

# Ops that act on each channel on its own, with one data input (Clip's min/max are scalars).
CHANNELWISE_UNARY = ("Relu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Clip", "Elu")
BROADCAST_BINARY = ("Mul", "Add", "Sub", "Div")
SPATIAL_MEANS = ("ReduceMean", "GlobalAveragePool")


@dataclass
class Region:
    concat: ir.Node
    sizes: list[int]                                   # channels per branch
    nodes: list[tuple[ir.Node, str]] = field(default_factory=list)   # (node, kind) in graph order

    @property
    def name(self) -> str:
        return self.concat.name


def concat_free(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome(details={"matched": [], "skipped": []})
    concats = [n for n in graph if n.op_type == "Concat"]
    if not concats:
        outcome.decline(GRAPH, "no Concat in the graph")
    for concat in concats:
        region = find_region(graph, concat)
        if isinstance(region, str):
            outcome.details["skipped"].append({"concat": concat.name, "reason": region})
            outcome.decline(concat.name, region)
            continue
        rewrite_region(graph, namer, region)
        outcome.details["matched"].append({"concat": region.name, "branches": region.sizes,
                                           "convs": [n.name for n, kind in region.nodes if kind == "conv"]})
        outcome.touched.append(region.name)
    return outcome


# ---------------------------------------------------------------- matching

def find_region(graph: ir.Graph, concat: ir.Node) -> Region | str:
    """The ops between `concat` and the convs that read it, or why the Concat must stay."""
    if not is_channel_axis(attr(concat, "axis", 0)) or len(concat.inputs) < 2:
        return "not a channel concat of 2+ inputs"
    sizes = [channels_of(v) for v in concat.inputs]
    if None in sizes or any(v.shape is None or len(v.shape) != 4 for v in concat.inputs):
        return "branch channel counts unknown"
    region = Region(concat, sizes)
    split_values = {concat.outputs[0]}
    members = set()
    after = False
    for node in graph:
        if node is concat:
            after = True
            continue
        if not after or not any(v in split_values for v in node.inputs):
            continue
        kind = classify(node, split_values, sizes)
        if isinstance(kind, tuple):
            return f"{node.op_type} {node.name}: {kind[0]}"
        region.nodes.append((node, kind))
        members.add(node)
        if kind != "conv":
            split_values.add(node.outputs[0])
    if not any(kind == "conv" for _, kind in region.nodes):
        return "no Conv reads the concatenated channels"
    for value in split_values:
        if value.is_graph_output():
            return f"{value.name} is a graph output"
        if any(use.node not in members for use in value.uses()):
            return f"{value.name} is read outside the graph's top level"
    return region


def classify(node: ir.Node, split_values: set, sizes: list[int]) -> str | tuple[str]:
    """'branch' (one copy per branch), 'conv' (partial convs summed: the region ends there), or a
    1-tuple (why `node` cannot run per branch)."""
    op, channels = node.op_type, sum(sizes)
    if node.domain not in ("", "ai.onnx") or len(node.outputs) != 1:
        return ("not a single-output ONNX op",)
    if op in CHANNELWISE_UNARY:
        return "branch" if node.inputs[0] in split_values and not any(
            v in split_values for v in node.inputs[1:]) else ("reads the branches as a parameter",)
    if op == "BatchNormalization":   # a per-channel affine: each branch takes its slice of the parameters
        params = [const_array(v) for v in node.inputs[1:5]]
        if node.inputs[0] in split_values and all(p is not None and p.shape == (channels,) for p in params):
            return "branch"
        return ("BatchNormalization with computed or mis-shaped parameters",)
    if op in BROADCAST_BINARY:
        other = [v for v in node.inputs if v not in split_values]
        if other and broadcast_kind(other[0], channels) is None:
            return ("the other operand does not broadcast per channel",)
        return "branch"
    if op in SPATIAL_MEANS:
        return "branch" if is_spatial_mean(node) else ("reduces over channels or drops dims",)
    if op == "Conv":
        conv = conv_info(node)
        if conv is None or node.inputs[0] not in split_values:
            return ("a Conv with computed weights or bias, or reading the branches as weights",)
        if conv.group > 1 and conv.weight.shape[1] * conv.group != channels:
            return ("grouped Conv whose input is not the concat",)
        if conv.group > len(sizes):
            return ("more conv groups than branches (a depthwise-like conv): cut per group it multiplies ops",)
        return "conv"
    return ("op not handled per branch",)


def broadcast_kind(value: ir.Value, channels: int) -> str | None:
    """'whole' if `value` broadcasts the same to every branch, 'split' if it is cut per channel: a
    constant, or a computed channel vector (the SE gate). A computed feature map (a residual) is not
    cut: the region would spread into the next block with a SPLIT per op."""
    shape = value.shape
    if shape is None or not all(isinstance(d, int) for d in shape):
        return None
    rank = len(shape)
    if rank < 3 or shape[rank - 3] == 1:        # no channel axis (NCHW, aligned from the right)
        return "whole"
    if shape[rank - 3] != channels or rank > 4:
        return None
    return "split" if const_array(value) is not None or all(d == 1 for d in shape[rank - 2:]) else None


def is_spatial_mean(node: ir.Node) -> bool:
    if node.op_type == "GlobalAveragePool":
        return True
    axes = attr(node, "axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:   # opset 18: an input
        axes = const_array(node.inputs[1])
    if axes is None or attr(node, "keepdims", 1) != 1:
        return False
    return sorted(int(a) % 4 for a in np.asarray(axes).ravel()) == [2, 3]


# ---------------------------------------------------------------- rewriting

def rewrite_region(graph: ir.Graph, namer: Namer, region: Region) -> None:
    branches: dict[ir.Value, list[ir.Value]] = {region.concat.outputs[0]: list(region.concat.inputs)}
    for node, kind in region.nodes:
        if kind == "conv":
            new_nodes, result = partial_convs(graph, namer, node, branches[node.inputs[0]], region.sizes)
            graph.insert_before(node, new_nodes)
            result.shape, result.type = node.outputs[0].shape, node.outputs[0].type
            replace_value(node.outputs[0], result)
            continue
        new_nodes, outs = per_branch(graph, namer, node, branches, region.sizes)
        graph.insert_before(node, new_nodes)
        branches[node.outputs[0]] = outs
    for node, _ in reversed(region.nodes):
        graph.remove(node, safe=True)
    graph.remove(region.concat, safe=True)


def per_branch(graph, namer, node: ir.Node, branches: dict, sizes: list[int]):
    """One copy of `node` per branch; a per-channel operand is cut into the branches' channels."""
    new_nodes = []
    per_input = []
    for idx, value in enumerate(node.inputs):
        if value in branches:
            per_input.append(branches[value])
        elif value is not None and operand_channel_axis(node, idx, value, sum(sizes)) is not None:
            split_nodes, parts = cut_channels(graph, namer, value, sizes, f"{node.name}/in{idx}",
                                              operand_channel_axis(node, idx, value, sum(sizes)))
            new_nodes += split_nodes
            per_input.append(parts)
        else:
            per_input.append([value] * len(sizes))
    outs = []
    for i in range(len(sizes)):
        copy = ir.Node(node.domain, node.op_type, [inputs[i] for inputs in per_input],
                       attributes=[ir.Attr(a.name, a.type, a.value) for a in node.attributes.values()],
                       name=namer(f"{node.name}/branch{i}"))
        copy.outputs[0].name = namer(f"{copy.name}_output")
        new_nodes.append(copy)
        outs.append(copy.outputs[0])
    return new_nodes, outs


def operand_channel_axis(node: ir.Node, idx: int, value: ir.Value, channels: int) -> int | None:
    """The axis along which a non-branch operand of `node` must be cut per branch (None: pass it whole)."""
    if node.op_type == "BatchNormalization":
        return 0 if idx >= 1 else None
    if node.op_type in BROADCAST_BINARY and broadcast_kind(value, channels) == "split":
        return len(value.shape) - 3
    return None


def cut_channels(graph, namer, value: ir.Value, sizes: list[int], base: str, axis: int):
    """`value` cut along `axis` into `sizes`: sliced constants, or a Split of a computed value."""
    array = const_array(value)
    if array is not None:
        bounds = np.cumsum([0] + sizes)
        parts = [add_initializer(graph, namer, f"{base}.branch{i}",
                                 np.take(array, range(bounds[i], bounds[i + 1]), axis=axis))
                 for i in range(len(sizes))]
        return [], parts
    split = new_node(namer, f"{base}/Split", "Split",
                     [value, add_initializer(graph, namer, f"{base}.split", np.array(sizes, np.int64))],
                     {"axis": axis}, num_outputs=len(sizes))
    return [split], list(split.outputs)


def partial_convs(graph, namer, node: ir.Node, parts: list[ir.Value], sizes: list[int]):
    """conv(concat(parts)) as a sum of one Conv per part over its input channels (per group)."""
    conv = conv_info(node)
    groups = conv.group
    in_per_group, out_per_group = conv.weight.shape[1], conv.out_channels // groups
    bounds = np.cumsum([0] + sizes)
    pieces_of = {i: split_at_groups(graph, namer, f"{node.name}/branch{i}", parts[i], bounds[i], bounds[i + 1],
                                    in_per_group) for i in range(len(parts))}
    new_nodes = [n for split_nodes, _ in pieces_of.values() for n in split_nodes]
    group_sums = []
    for g in range(groups):
        lo, hi = g * in_per_group, (g + 1) * in_per_group
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        total = None
        for i, (_, pieces) in pieces_of.items():
            for start, stop, piece in pieces:
                if stop <= lo or start >= hi:
                    continue
                weight = np.ascontiguousarray(conv.weight[rows, start - lo:stop - lo])
                inputs = [piece, add_initializer(graph, namer, f"{node.name}.branch{i}.g{g}.weight", weight)]
                if total is None and conv.bias is not None:     # the bias once per output channel
                    inputs.append(add_initializer(graph, namer, f"{node.name}.g{g}.bias", conv.bias[rows]))
                partial = new_node(namer, f"{node.name}/branch{i}" + (f"/g{g}" if groups > 1 else ""), "Conv",
                                   inputs, conv_attributes(1, conv.strides, conv.pads, conv.dilations,
                                                           kernel=conv.kernel))
                new_nodes.append(partial)
                total = add_to_sum(namer, f"{node.name}/branch{i}/Add", total, partial.outputs[0], new_nodes)
        group_sums.append(total)
    if groups == 1:
        return new_nodes, group_sums[0]
    joined = new_node(namer, f"{node.name}/Concat", "Concat", group_sums, {"axis": 1})
    return new_nodes + [joined], joined.outputs[0]


def split_at_groups(graph, namer, base: str, part: ir.Value, start: int, stop: int, in_per_group: int):
    """([Split] or [], [(start, stop, value)]) of one branch cut where a conv group boundary falls inside it."""
    cuts = list(range((start // in_per_group + 1) * in_per_group, stop, in_per_group))
    if not cuts:
        return [], [(start, stop, part)]
    edges = [start, *cuts, stop]
    sizes = [b - a for a, b in zip(edges[:-1], edges[1:])]
    split = new_node(namer, f"{base}/Split", "Split",
                     [part, add_initializer(graph, namer, f"{base}.split", np.array(sizes, np.int64))],
                     {"axis": 1}, num_outputs=len(sizes))
    return [split], [(a, b, v) for a, b, v in zip(edges[:-1], edges[1:], split.outputs)]
