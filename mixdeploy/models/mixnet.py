"""MixNet-S/M/L (Tan & Le 2019) as data: block-string lists decoded by `blocks.build_stages`.

The definitions are timm's (`efficientnet._gen_mixnet_s/_m`), which follow the official
TensorFlow code; module names match timm so `load_state_dict(strict=True)` works both ways
with timm's `mixnet_s/m/l` and `tf_mixnet_s/m/l`, for any number of classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from mixdeploy.models.blocks import (BatchNormAct2d, BuildContext, build_stages, decode_arch_def,
                                     round_channels)
from mixdeploy.models.mixconv import create_conv2d

MIXNET_S_ARCH = [
    ["ds_r1_k3_s1_e1_c16"],                                                             # 112x112, relu
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],                   # 112 -> 56, relu
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],   # 56 -> 28, swish
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],  # 28 -> 14
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],  # 14 -> 7
]

MIXNET_M_ARCH = [
    ["ds_r1_k3_s1_e1_c24"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32", "ir_r1_k3_a1.1_p1.1_s1_e3_c32"],
    ["ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3_s1_e6_c120_se0.5_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw", "ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]

TF_BN_EPS = 1e-3  # TensorFlow's BatchNormalization default, which tf_mixnet_* checkpoints were trained with


@dataclass(frozen=True)
class MixNetConfig:
    arch: tuple[tuple[str, ...], ...]
    stem_channels: int
    channel_multiplier: float = 1.0
    head_channels: int = 1536
    tf_compatible: bool = False     # TF 'same' padding and BN eps 1e-3 (tf_mixnet_*)


def _cfg(arch, stem, multiplier=1.0, tf=False) -> MixNetConfig:
    return MixNetConfig(tuple(map(tuple, arch)), stem, multiplier, tf_compatible=tf)


MIXNET_CONFIGS = {
    "mixnet-s": _cfg(MIXNET_S_ARCH, 16),
    "mixnet-m": _cfg(MIXNET_M_ARCH, 24),
    "mixnet-l": _cfg(MIXNET_M_ARCH, 24, 1.3),   # paper: MixNet-L = MixNet-M x1.3 width
    "tf-mixnet-s": _cfg(MIXNET_S_ARCH, 16, tf=True),
    "tf-mixnet-m": _cfg(MIXNET_M_ARCH, 24, tf=True),
    "tf-mixnet-l": _cfg(MIXNET_M_ARCH, 24, 1.3, tf=True),
}


class MixNet(nn.Module):
    """stem conv -> BN+ReLU -> 6 stages of blocks -> 1x1 head conv -> BN+ReLU -> avg pool -> linear."""

    def __init__(self, config: MixNetConfig, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        ctx = BuildContext(padding="same" if config.tf_compatible else "symmetric",
                           bn_eps=TF_BN_EPS if config.tf_compatible else 1e-5)
        round_chs = partial(round_channels, multiplier=config.channel_multiplier)
        self.config = config
        self.num_classes = num_classes
        stem = round_chs(config.stem_channels)
        self.conv_stem = create_conv2d(in_channels, stem, 3, stride=2, padding=ctx.padding)
        self.bn1 = BatchNormAct2d(stem, ctx.bn_eps, nn.ReLU)
        self.blocks, last_channels = build_stages(decode_arch_def([list(s) for s in config.arch]), stem,
                                                  ctx, round_chs)
        self.conv_head = create_conv2d(last_channels, config.head_channels, 1, padding=ctx.padding)
        self.bn2 = BatchNormAct2d(config.head_channels, ctx.bn_eps, nn.ReLU)
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))  # no params: no keys
        self.classifier = nn.Linear(config.head_channels, num_classes)
        init_weights_like_tf(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_head(self.blocks(self.bn1(self.conv_stem(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.global_pool(self.forward_features(x)))


def init_weights_like_tf(model: nn.Module) -> None:
    """The TF MixNet initialisation (fan-out normal for convs), as timm's `_init_weight_goog`.

    Only matters for training from scratch; loaded checkpoints overwrite it.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            init_range = 1.0 / math.sqrt(m.weight.size(0))
            nn.init.uniform_(m.weight, -init_range, init_range)
            nn.init.zeros_(m.bias)


def create_mixnet(name: str, num_classes: int = 1000) -> MixNet:
    """One of MIXNET_CONFIGS by its canonical name (see registry for aliases)."""
    return MixNet(MIXNET_CONFIGS[name], num_classes=num_classes)
