"""fuse_grouped_pointwise: equal Split -> k dense 1x1 Convs -> Concat becomes one Conv(group=k).

MixNet's `a1.1`/`p1.1` blocks split their 1x1 convs in two; one grouped CONV_2D ran
2x faster in int8 TFLite than split + two convs + concat (docs/rewrites.md, "The measurements").
A split written as Slice ops is found once slices_to_split (earlier in the default order) made it a Split.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import Namer, conv_attributes
from mixdeploy.onnx.passes import PassOutcome, RewriteOptions
from mixdeploy.onnx.passes.branches import SplitConvConcat, replace_by_one_conv, select, split_conv_concats


def grouped_pointwise_mismatch(match: SplitConvConcat) -> str | None:
    """Why a Split -> Conv per part -> Concat cannot be one grouped 1x1 Conv (None: it can)."""
    convs = match.convs
    if not all(c.is_pointwise and c.group == 1 for c in convs):
        return "its part Convs are not all dense 1x1 Convs"
    if len(set(match.in_channels)) != 1 or len(set(match.out_channels)) != 1:
        return f"unequal parts (in {match.in_channels}, out {match.out_channels}): a grouped Conv has equal groups"
    if len({c.weight.dtype for c in convs}) != 1:
        return "its part Convs' weights differ in dtype"
    return None


def fuse_grouped_pointwise(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    matches, declined = split_conv_concats(graph)
    outcome = PassOutcome(declined=declined)
    for match in select(matches, grouped_pointwise_mismatch, outcome.declined):
        weight = np.concatenate([c.weight for c in match.convs], axis=0)
        bias = match.stacked_bias() if any(c.bias is not None for c in match.convs) else None
        replace_by_one_conv(graph, namer, match, weight, bias,
                            conv_attributes(len(match.convs), (1, 1), (0, 0, 0, 0), kernel=(1, 1)))
        outcome.touched.append(match.name)
    return outcome
