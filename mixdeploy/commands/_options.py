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
