"""Option groups shared by several commands (one definition, the same names everywhere)."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import click

from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import INTERPOLATION_NAMES, PreprocessingOverrides, parse_channel_values

CHANNEL_OPTIONS = ("--mean", "--std")
SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class CountParam(click.ParamType):
    """'600M', '1.2G', '250k', '600000000' -> int."""

    name = "count"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a count; use e.g. 600M, 1.2G or 600000000", param, ctx)
        return int(round(float(match.group(1)) * SUFFIXES[match.group(2).upper()]))


def join_channel_values(args: list[str]) -> list[str]:
    """timm's validate.py takes `--mean 0.485 0.456 0.406` and `--input-size 3 224 224`; click
    options take one token. Join up to three numbers after --mean/--std into one
    `0.485,0.456,0.406` token, and `--input-size C H W` into its side H (`--input-size 224` works too)."""
    out, i = [], 0
    while i < len(args):
        out.append(args[i])
        if args[i] in CHANNEL_OPTIONS or args[i] == "--input-size":
            values = []
            while i + 1 < len(args) and len(values) < 3 and _is_number(args[i + 1]):
                values.append(args[i + 1])
                i += 1
            if args[i - len(values)] == "--input-size":
                if values:
                    out.append(_input_side(values))
            elif values:
                out.append(",".join(values))
        i += 1
    return out


def _input_side(values: list[str]) -> str:
    if len(values) == 1:
        return values[0]
    if len(values) == 3 and values[0] == "3" and values[1] == values[2]:
        return values[1]
    raise MixdeployError(f"--input-size {' '.join(values) or '(nothing)'}: give the side (224) or timm's C H W "
                         "with 3 channels and a square image (3 224 224)")


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


class TimmStyleCommand(click.Command):
    """A click command that also reads timm's space-separated --mean/--std values."""

    def parse_args(self, ctx, args):
        return super().parse_args(ctx, join_channel_values(list(args)))


def preprocessing_options(command):
    """--input-size, --crop-pct, --interpolation, --mean, --std, --preprocess FILE -> `preprocessing`
    (a PreprocessingOverrides) passed to the command."""
    options = [
        click.option("--input-size", type=click.IntRange(min=16), help="Square input side in pixels (default: the model's)."),
        click.option("--crop-pct", type=click.FloatRange(0, 1, min_open=True),
                     help="Resize the shorter side to input/crop_pct, then center-crop (1.0: no crop; timm ImageNet: 0.875)."),
        click.option("--interpolation", type=click.Choice(INTERPOLATION_NAMES), help="Resize filter (PIL)."),
        click.option("--mean", help="Per-channel mean, e.g. 0.485,0.456,0.406 (or 'imagenet', 'inception')."),
        click.option("--std", help="Per-channel std, e.g. 0.229,0.224,0.225."),
        click.option("--preprocess", "preprocess_config", type=click.Path(dir_okay=False, path_type=Path),
                     help="Read the preprocessing from a timm/Hugging Face config.json, a preprocessor_config.json "
                          "or a mixdeploy manifest.json (flags still win)."),
    ]

    @functools.wraps(command)
    def wrapper(*args, input_size, crop_pct, interpolation, mean, std, preprocess_config, **kwargs):
        overrides = PreprocessingOverrides(
            input_size=input_size, crop_pct=crop_pct, interpolation=interpolation,
            mean=parse_channel_values(mean, "mean") if mean else None,
            std=parse_channel_values(std, "std") if std else None,
            config=preprocess_config)
        if preprocess_config is not None and not preprocess_config.is_file():
            raise MixdeployError(f"--preprocess: file not found: {preprocess_config}")
        return command(*args, preprocessing=overrides, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def model_source_options(command):
    """--weights, --factory-kwargs (passed on parsed: a dict or None), --num-classes, then the
    preprocessing options: what export and tune load MODEL with."""
    options = [
        click.option("--weights", type=click.Path(dir_okay=False), help="State dict or checkpoint file."),
        click.option("--factory-kwargs", help="Keyword arguments for a pkg.module:factory MODEL, as a JSON object: "
                                              """'{"num_classes": 10}'."""),
        click.option("--num-classes", type=click.IntRange(min=1),
                     help="Classifier size (default: from weights or 1000)."),
    ]

    @functools.wraps(command)
    def wrapper(*args, factory_kwargs, **kwargs):
        from mixdeploy.models.sources import parse_factory_kwargs

        return command(*args, factory_kwargs=parse_factory_kwargs(factory_kwargs), **kwargs)

    wrapper = preprocessing_options(wrapper)
    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


def calibration_options(command):
    """--calib, --calib-count, --quant-recipe: how export and tune make the int8 model."""
    from mixdeploy.tflite.recipe import RECIPES

    options = [
        click.option("--calib", help="Calibration data: fashion-mnist, an image folder or a .npy."),
        click.option("--calib-count", type=click.IntRange(min=1), default=64, show_default=True),
        click.option("--quant-recipe", type=click.Choice(list(RECIPES)), default="default", show_default=True,
                     help="How int8 is calibrated and quantized (docs/accuracy.md compares them)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def threshold_options(command):
    """--min-top1-agreement, --max-top1-drop, --min-cosine, --min-sqnr-db -> `thresholds`
    (a parity.Thresholds) passed to the command: the parity gate's."""
    options = [
        click.option("--min-top1-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True),
        click.option("--max-top1-drop", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Points."),
        click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, help="Mean logit cosine."),
        click.option("--min-sqnr-db", type=float, default=None, help="Logit SQNR in dB."),
    ]

    @functools.wraps(command)
    def wrapper(*args, min_top1_agreement, max_top1_drop, min_cosine, min_sqnr_db, **kwargs):
        from mixdeploy.parity import Thresholds

        thresholds = Thresholds(min_top1_agreement=min_top1_agreement, max_top1_drop=max_top1_drop,
                                min_cosine=min_cosine, min_sqnr_db=min_sqnr_db)
        return command(*args, thresholds=thresholds, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper
