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
from mixdeploy.onnx.passes.branches import SplitConvConcat, replace_by_one_conv, split_conv_concats


def is_grouped_pointwise(match: SplitConvConcat) -> bool:
    convs = match.convs
    return (all(c.is_pointwise and c.group == 1 for c in convs)
            and len(set(match.in_channels)) == 1 and len(set(match.out_channels)) == 1
            and len({c.weight.dtype for c in convs}) == 1)


def fuse_grouped_pointwise(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome()
    for match in [m for m in split_conv_concats(graph) if is_grouped_pointwise(m)]:
        weight = np.concatenate([c.weight for c in match.convs], axis=0)
        bias = match.stacked_bias() if any(c.bias is not None for c in match.convs) else None
        replace_by_one_conv(graph, namer, match, weight, bias,
                            conv_attributes(len(match.convs), (1, 1), (0, 0, 0, 0), kernel=(1, 1)))
        outcome.touched.append(match.name)
    return outcome
