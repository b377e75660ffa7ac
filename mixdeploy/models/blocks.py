"""Block strings -> modules, in the style of timm's `_efficientnet_builder`.

A network is a list of stages, each a list of block strings such as
`ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw`:

    ir / ds  inverted residual / depthwise-separable block
    r3       repeat the block 3 times (only the first repeat keeps the stride)
    k3.5     depthwise kernels; a dotted list makes a MixConv2d
    a1.1     expansion 1x1 split into 2 groups (p1.1: the same for the projection)
    s2       stride        e6   expansion ratio        c40  output channels
    se0.5    squeeze-excite, reduced to 0.5 x the *block input* channels
    nsw      swish (SiLU); without it the block uses the network default (ReLU)

Module and attribute names follow timm (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `se.conv_reduce`,
`se.conv_expand`, `conv_pwl`, `bn3`), so state dicts are interchangeable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn

from mixdeploy.models.mixconv import create_conv2d

ACTIVATIONS = {"re": nn.ReLU, "sw": nn.SiLU}


@dataclass(frozen=True)
class BlockSpec:
    """One decoded block (one repeat)."""
    block_type: str                     # "ir" or "ds"
    out_channels: int
    stride: int
    dw_kernels: tuple[int, ...]         # one entry = plain depthwise conv, more = MixConv
    exp_kernels: tuple[int, ...] = (1,)  # (1, 1) = expansion 1x1 in 2 groups
    pw_kernels: tuple[int, ...] = (1,)
    exp_ratio: float = 1.0
    se_ratio: float = 0.0
    act: str | None = None              # "sw", "re" or None for the network default


def _kernels(text: str) -> tuple[int, ...]:
    return tuple(int(k) for k in text.split("."))


def decode_block_str(block_str: str) -> tuple[BlockSpec, int]:
    """'ir_r2_k3.5_s1_e6_c80_se0.25_nsw' -> (BlockSpec, repeats)."""
    block_type, *ops = block_str.split("_")
    if block_type not in ("ir", "ds"):
        raise ValueError(f"unknown block type {block_type!r} in {block_str!r} (MixNets use 'ir' and 'ds')")
    options, act = {}, None
    for op in ops:
        if op.startswith("n"):
            act = op[1:]
            if act not in ACTIVATIONS:
                raise ValueError(f"unknown activation {op!r} in {block_str!r}")
            continue
        key, value = re.split(r"(\d.*)", op)[:2]
        options[key] = value
    spec = BlockSpec(
        block_type=block_type,
        out_channels=int(options["c"]),
        stride=int(options["s"]),
        dw_kernels=_kernels(options["k"]),
        exp_kernels=_kernels(options.get("a", "1")),
        pw_kernels=_kernels(options.get("p", "1")),
        exp_ratio=float(options.get("e", 1)),
        se_ratio=float(options.get("se", 0)),
        act=act,
    )
    return spec, int(options["r"])


def decode_arch_def(arch_def: list[list[str]]) -> list[list[BlockSpec]]:
    """Stages of block strings -> stages of one BlockSpec per block (repeats expanded, stride on the first)."""
    stages = []
    for block_strings in arch_def:
        stage = []
        for block_str in block_strings:
            spec, repeats = decode_block_str(block_str)
            stage += [spec] + [replace(spec, stride=1)] * (repeats - 1)
        stages.append(stage)
    return stages


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Nearest multiple of `divisor`, never more than 10% below `value` (timm/TF rule)."""
    new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new_value < round_limit * value:
        new_value += divisor
    return new_value


def round_channels(channels: int, multiplier: float = 1.0, divisor: int = 8) -> int:
    """Width scaling: MixNet-L is MixNet-M with every channel count x1.3, rounded to multiples of 8."""
    return make_divisible(channels * multiplier, divisor) if multiplier else channels


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation, as one module.

    Subclassing BatchNorm2d (rather than holding one) keeps timm's keys (`bn1.weight`,
    not `bn1.bn.weight`); the activation has no parameters so it adds no keys.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, act_layer: type[nn.Module] | None = nn.ReLU):
        super().__init__(num_features, eps=eps)
        self.act = act_layer() if act_layer is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(act(reduce(mean(x))))) — timm's EfficientNet SE (1x1 convs with bias)."""

    def __init__(self, channels: int, reduced_channels: int, act_layer: type[nn.Module]):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act1 = act_layer()
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act1(self.conv_reduce(s))))


@dataclass(frozen=True)
class BuildContext:
    """Network-wide choices every block shares."""
    padding: str = "symmetric"      # "same" for the tf_ variants
    bn_eps: float = 1e-5
    default_act: str = "re"


def _se(spec: BlockSpec, mid_channels: int, act: type[nn.Module]) -> nn.Module:
    if not spec.se_ratio:
        return nn.Identity()
    # SE width comes from the block *input* (timm: se_ratio / exp_ratio applied to mid channels).
    ratio = spec.se_ratio / (spec.exp_ratio if spec.block_type == "ir" else 1.0)
    return SqueezeExcite(mid_channels, round(mid_channels * ratio), act)


class DepthwiseSeparable(nn.Module):
    """dw conv -> BN+act -> SE -> pw conv -> BN (no act), residual when shapes allow."""

    def __init__(self, spec: BlockSpec, in_channels: int, out_channels: int, ctx: BuildContext):
        super().__init__()
        act = ACTIVATIONS[spec.act or ctx.default_act]
        self.has_skip = spec.stride == 1 and in_channels == out_channels
        self.conv_dw = create_conv2d(in_channels, in_channels, list(spec.dw_kernels), stride=spec.stride,
                                     depthwise=True, padding=ctx.padding)
        self.bn1 = BatchNormAct2d(in_channels, ctx.bn_eps, act)
        self.se = _se(spec, in_channels, act)
        self.conv_pw = create_conv2d(in_channels, out_channels, list(spec.pw_kernels), padding=ctx.padding)
        self.bn2 = BatchNormAct2d(out_channels, ctx.bn_eps, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return y + x if self.has_skip else y


class InvertedResidual(nn.Module):
    """pw expand -> BN+act -> (mixed) dw conv -> BN+act -> SE -> pw project -> BN, residual when shapes allow."""

    def __init__(self, spec: BlockSpec, in_channels: int, out_channels: int, ctx: BuildContext):
        super().__init__()
        act = ACTIVATIONS[spec.act or ctx.default_act]
        mid = make_divisible(in_channels * spec.exp_ratio)
        self.has_skip = spec.stride == 1 and in_channels == out_channels
        self.conv_pw = create_conv2d(in_channels, mid, list(spec.exp_kernels), padding=ctx.padding)
        self.bn1 = BatchNormAct2d(mid, ctx.bn_eps, act)
        self.conv_dw = create_conv2d(mid, mid, list(spec.dw_kernels), stride=spec.stride, depthwise=True,
                                     padding=ctx.padding)
        self.bn2 = BatchNormAct2d(mid, ctx.bn_eps, act)
        self.se = _se(spec, mid, act)
        self.conv_pwl = create_conv2d(mid, out_channels, list(spec.pw_kernels), padding=ctx.padding)
        self.bn3 = BatchNormAct2d(out_channels, ctx.bn_eps, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = self.bn3(self.conv_pwl(self.se(y)))
        return y + x if self.has_skip else y


BLOCK_TYPES: dict[str, Callable[..., nn.Module]] = {"ds": DepthwiseSeparable, "ir": InvertedResidual}


def build_stages(stages: list[list[BlockSpec]], in_channels: int, ctx: BuildContext,
                 round_chs: Callable[[int], int] = round_channels) -> tuple[nn.Sequential, int]:
    """Decoded stages -> nn.Sequential of nn.Sequential blocks (keys `blocks.<stage>.<block>`)."""
    built = []
    for stage in stages:
        blocks = []
        for spec in stage:
            out_channels = round_chs(spec.out_channels)
            blocks.append(BLOCK_TYPES[spec.block_type](spec, in_channels, out_channels, ctx))
            in_channels = out_channels
        built.append(nn.Sequential(*blocks))
    return nn.Sequential(*built), in_channels
