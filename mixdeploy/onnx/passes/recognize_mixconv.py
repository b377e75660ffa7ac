"""recognize_mixconv: find every MixConv (Split -> one depthwise Conv per group -> Concat).

Changes nothing in the graph: it reports kernel sizes and channel groups per layer (the pass's
`mixconvs` detail, `RewriteReport.mixconvs`), which the manifest keeps and `mixdeploy report` and
`mixdeploy tune` read. A channel split written as Slice ops is found once slices_to_split (earlier
in the default order) made it a Split. `find_mixconvs` is the one matcher lower_mixconv uses too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import onnx_ir as ir

from mixdeploy.onnx.graph import spatial_of
from mixdeploy.onnx.passes import Declined, PassOutcome, RewriteOptions
from mixdeploy.onnx.passes.branches import SplitConvConcat, select, split_conv_concats


@dataclass
class MixConvSpec:
    """What a MixConv computes, independent of how it is lowered."""

    name: str
    channels: list[int]
    kernels: list[list[int]]          # [kH, kW] per group
    strides: list[int]
    pads: list[list[int]]             # [top, left, bottom, right] per group
    dilations: list[int]
    input_hw: list[int] | None
    output_hw: list[int] | None

    @property
    def signature(self) -> str:
        """Shape key for per-layer lowering choices (two layers with equal signature lower alike)."""
        return json.dumps([self.channels, self.kernels, self.strides, self.pads, self.dilations, self.input_hw])


def mixconv_mismatch(match: SplitConvConcat) -> str | None:
    """Why a Split -> Conv per part -> Concat is not a MixConv (None: it is one)."""
    convs = match.convs
    if not all(c.is_depthwise for c in convs):
        return "not a MixConv: its part Convs are not all depthwise"
    if len({c.strides for c in convs}) != 1 or len({c.dilations for c in convs}) != 1:
        return "not a MixConv: its part Convs differ in stride or dilation"
    return None


def scan_mixconvs(graph: ir.Graph) -> tuple[list[SplitConvConcat], list[Declined]]:
    """Every MixConv of the graph, and each Split that is not one, with why."""
    matches, declined = split_conv_concats(graph)
    return select(matches, mixconv_mismatch, declined), declined


def find_mixconvs(graph: ir.Graph) -> list[SplitConvConcat]:
    return scan_mixconvs(graph)[0]


def describe(match: SplitConvConcat) -> MixConvSpec:
    c0 = match.convs[0]
    return MixConvSpec(
        name=match.name, channels=match.out_channels, kernels=[list(c.kernel) for c in match.convs],
        strides=list(c0.strides), pads=[list(c.pads) for c in match.convs], dilations=list(c0.dilations),
        input_hw=list(spatial_of(match.split.inputs[0]) or []) or None,
        output_hw=list(spatial_of(match.concat.outputs[0]) or []) or None)


def recognize_mixconv(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    mixconvs, declined = scan_mixconvs(model.graph)
    specs = [describe(m) for m in mixconvs]
    return PassOutcome(touched=[s.name for s in specs], declined=declined,
                       details={"mixconvs": [asdict(s) for s in specs]})
