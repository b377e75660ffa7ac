"""Quantization recipes: how an int8 model is calibrated and quantized, by name.

A recipe is what `mixdeploy export --quant-recipe NAME` picks and what the manifest records, so
an int8 model can be rebuilt the same way. Which layers stay in float is a separate, per-model
choice (`convert_onnx(keep_float=...)`, from blame), not part of a recipe. Each field is one technique; benchmarks/accuracy.py
measures each alone and in combination (docs/accuracy.md), and `default` holds only what won
on average over checkpoints and calibration draws.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from mixdeploy.errors import MixdeployError


@dataclass(frozen=True)
class QuantRecipe:
    name: str
    range_method: str = "trimmed-midminmax"  # activation tensors (calibrate.RANGE_METHODS)
    small_range_method: str = "minmax"       # per-channel vectors (calibrate.is_channel_vector)
    bias_correction: bool = True             # fold the weight-rounding mean shift into conv biases
    weight_rounding: bool = False            # error-compensating int8 weight rounding (weight_rounding.py)
    concat_free: bool = False                # MixConv concats pushed into the next convs: each branch keeps
                                             # its own scale (mixdeploy/onnx/passes/concat_free.py)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


RECIPES: dict[str, QuantRecipe] = {
    # trimmed-midminmax ranges, per-channel vectors minmax, bias correction: ahead of midminmax and
    # avgminmax on average over MixNet-S/M/TF-M at 224, and on each model level with the better of
    # the two or ahead (docs/accuracy.md)
    "default": QuantRecipe("default"),
    # the first release's recipe: per-image ranges averaged everywhere, no bias correction
    "avgminmax": QuantRecipe("avgminmax", "avgminmax", "avgminmax", bias_correction=False),
    # what TFLiteConverter's own calibrator does: global min/max of every tensor
    "minmax": QuantRecipe("minmax", "minmax", "minmax", bias_correction=False),
    # the previous default: halfway to the global extremes, so one outlier calibration image moves a range
    "midminmax": QuantRecipe("midminmax", "midminmax"),
    "percentile": QuantRecipe("percentile", "percentile", "minmax"),
    "no-bias-correction": QuantRecipe("no-bias-correction", bias_correction=False),
    # default + no CONCATENATION after a MixConv: its branches keep their own int8 scales up to the
    # sum of the next conv's partial convs (more ops; docs/accuracy.md, docs/rewrites.md)
    "per-branch": QuantRecipe("per-branch", concat_free=True),
}


def get_recipe(recipe: str | QuantRecipe | None) -> QuantRecipe:
    if recipe is None:
        return RECIPES["default"]
    if isinstance(recipe, QuantRecipe):
        return recipe
    if recipe not in RECIPES:
        raise MixdeployError(f"unknown quantization recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[recipe]
