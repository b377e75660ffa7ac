"""recognize_mixconv: find every MixConv (Split -> one depthwise Conv per group -> Concat).

Records kernel sizes and channel groups per layer in the model's metadata_props
(key `mixdeploy.mixconv`, JSON) so later stages (lowering policy, converter, report)
need not re-derive them. Slice-chain channel splits are normalized into a Split first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import onnx_ir as ir

from mixdeploy.onnx.graph import spatial_of
from mixdeploy.onnx.passes import PassOutcome
from mixdeploy.onnx.passes.branches import SplitConvConcat, split_conv_concats
from mixdeploy.onnx.passes.slices_to_split import slices_to_split

METADATA_KEY = "mixdeploy.mixconv"


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


def is_mixconv(match: SplitConvConcat) -> bool:
    convs = match.convs
    return (all(c.is_depthwise for c in convs)
            and len({c.strides for c in convs}) == 1 and len({c.dilations for c in convs}) == 1)


def find_mixconvs(graph: ir.Graph) -> list[SplitConvConcat]:
    return [m for m in split_conv_concats(graph) if is_mixconv(m)]


def describe(match: SplitConvConcat) -> MixConvSpec:
    c0 = match.convs[0]
    return MixConvSpec(
        name=match.name, channels=match.out_channels, kernels=[list(c.kernel) for c in match.convs],
        strides=list(c0.strides), pads=[list(c.pads) for c in match.convs], dilations=list(c0.dilations),
        input_hw=list(spatial_of(match.split.inputs[0]) or []) or None,
        output_hw=list(spatial_of(match.concat.outputs[0]) or []) or None)


def recognize_mixconv(model: ir.Model) -> PassOutcome:
    new_splits = slices_to_split(model)
    specs = [describe(m) for m in find_mixconvs(model.graph)]
    model.metadata_props[METADATA_KEY] = json.dumps([asdict(s) for s in specs])
    return PassOutcome(touched=[s.name for s in specs],
                       details={"mixconvs": [asdict(s) for s in specs], "slices_normalized": new_splits})


def read_mixconv_metadata(model) -> list[dict]:
    """The recorded MixConv layers of an onnx.ModelProto or onnx_ir Model ([] when none)."""
    if isinstance(model, ir.Model):
        raw = model.metadata_props.get(METADATA_KEY)
    else:
        raw = next((p.value for p in model.metadata_props if p.key == METADATA_KEY), None)
    return json.loads(raw) if raw else []
