"""The shape shared by MixConvs and split 1x1 convs: Split(C) -> one Conv per part -> Concat(C)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import (ConvInfo, Namer, add_initializer, attr, conv_info, is_channel_axis, new_node,
                                  only_use, replace_value)
from mixdeploy.onnx.passes import GRAPH, Declined


@dataclass
class SplitConvConcat:
    split: ir.Node
    convs: list[ConvInfo]
    concat: ir.Node

    @property
    def name(self) -> str:
        """'blocks.2.0.conv_dw/Split' -> 'blocks.2.0.conv_dw' (the module the three nodes came from)."""
        return re.sub(r"[/_.]?Split(_\d+)?$", "", self.split.name) or self.split.name

    @property
    def in_channels(self) -> list[int]:
        return [c.weight.shape[1] * c.group for c in self.convs]

    @property
    def out_channels(self) -> list[int]:
        return [c.out_channels for c in self.convs]

    def stacked_bias(self) -> np.ndarray:
        """Every part's bias one after the other (zeros for a part without one)."""
        return np.concatenate([c.bias if c.bias is not None else np.zeros(c.out_channels, c.weight.dtype)
                               for c in self.convs])


def match_split_conv_concat(split: ir.Node) -> SplitConvConcat | str:
    """The Split -> one Conv per part -> Concat rooted at `split`, or why `split` roots none."""
    if split.op_type != "Split" or not is_channel_axis(attr(split, "axis", 0)) or len(split.outputs) < 2:
        return "not a channel Split into 2+ parts"
    convs = []
    for i, part in enumerate(split.outputs):
        consumer = only_use(part)
        conv = conv_info(consumer) if consumer is not None else None
        if conv is None or conv.node.inputs[0] is not part:
            return f"part {i} is not read by one Conv (constant weights) alone"
        convs.append(conv)
    concat = only_use(convs[0].node.outputs[0])
    if concat is None or concat.op_type != "Concat" or not is_channel_axis(attr(concat, "axis", 0)):
        return "the first part's Conv does not feed one channel Concat alone"
    if list(concat.inputs) != [c.node.outputs[0] for c in convs]:
        return f"{concat.name} does not join exactly the parts' Convs, in order"
    if any(only_use(c.node.outputs[0]) is not concat for c in convs):
        return "a part's Conv output is read besides the Concat"
    return SplitConvConcat(split, convs, concat)


def split_conv_concats(graph: ir.Graph) -> tuple[list[SplitConvConcat], list[Declined]]:
    """Every Split -> Conv per part -> Concat of the graph, and each Split that roots none (why)."""
    splits = [n for n in graph if n.op_type == "Split"]
    if not splits:
        return [], [Declined(GRAPH, "no Split in the graph (the form is Split -> one Conv per part -> Concat)")]
    found = [(split, match_split_conv_concat(split)) for split in splits]
    return ([m for _, m in found if not isinstance(m, str)],
            [Declined(split.name, m) for split, m in found if isinstance(m, str)])


def select(matches: list[SplitConvConcat], mismatch: Callable[[SplitConvConcat], str | None],
           declined: list[Declined]) -> list[SplitConvConcat]:
    """The matches `mismatch` finds nothing wrong with; the others appended to `declined`, with why."""
    kept = []
    for match in matches:
        why = mismatch(match)
        if why is None:
            kept.append(match)
        else:
            declined.append(Declined(match.name, why))
    return kept


def replace_by_one_conv(graph: ir.Graph, namer: Namer, match: SplitConvConcat, weight: np.ndarray,
                        bias: np.ndarray | None, attributes: dict) -> ir.Node:
    """One Conv over the Split's input takes the Concat's place (Split and part convs, orphaned, go
    when the graph is serialized). Used by fuse_grouped_pointwise and the `pad` lowering."""
    inputs = [match.split.inputs[0], add_initializer(graph, namer, f"{match.name}.weight", weight)]
    if bias is not None:
        inputs.append(add_initializer(graph, namer, f"{match.name}.bias", bias))
    conv = new_node(namer, match.name, "Conv", inputs, attributes)
    joined = match.concat.outputs[0]
    conv.outputs[0].shape, conv.outputs[0].type = joined.shape, joined.type
    graph.insert_before(match.concat, conv)
    replace_value(joined, conv.outputs[0])
    return conv
