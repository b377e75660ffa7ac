"""MixConv: mixed depthwise convolution (Tan & Le, "MixConv", 2019, section 3).

The channels are split into g groups, group i is convolved depthwise with its own
kernel (3, 5, 7, ... by default) and the outputs are concatenated.  Written as a
`torch.split` -> one `nn.Conv2d` per group -> `torch.cat`, so `torch.onnx.export`
produces Split -> Conv x g -> Concat, the pattern the rewrite passes look for.

Weight compatibility with timm: `MixConv2d` is an `nn.ModuleDict` whose groups are
named "0", "1", ... exactly like timm's `MixedConv2d` (keys `.0.weight`, `.1.weight`),
and `create_conv2d` returns a plain conv (key `.weight`, no index) for one kernel,
like timm's `create_conv2d`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

PADDINGS = ("symmetric", "same")
PARTITIONS = ("equal", "exponential")


def split_channels_equal(channels: int, groups: int) -> list[int]:
    """C // g per group, the remainder to group 0 (timm `_split_channels`, TF `_split_channels`)."""
    _check_split(channels, groups)
    split = [channels // groups] * groups
    split[0] += channels - sum(split)
    return split


def split_channels_exponential(channels: int, groups: int) -> list[int]:
    """Group i gets floor(C / 2^(i+1)), the last group takes the rest (paper: 32, g=4 -> 16, 8, 4, 4)."""
    _check_split(channels, groups)
    split = [channels >> (i + 1) for i in range(groups - 1)]
    split.append(channels - sum(split))
    if min(split) < 1:
        raise ValueError(f"exponential partition of {channels} channels into {groups} groups leaves "
                         f"an empty group ({split}); use fewer groups or the equal partition")
    return split


def _check_split(channels: int, groups: int) -> None:
    if groups < 1 or channels < groups:
        raise ValueError(f"cannot split {channels} channels into {groups} groups")


def split_channels(channels: int, groups: int, partition: str = "equal") -> list[int]:
    if partition == "equal":
        return split_channels_equal(channels, groups)
    if partition == "exponential":
        return split_channels_exponential(channels, groups)
    raise ValueError(f"unknown partition {partition!r}; expected one of {PARTITIONS}")


def default_kernel_sizes(groups: int) -> list[int]:
    """The paper's choice: group i gets kernel 2i+1 starting at 3 (3, 5, 7, 9, ...)."""
    return [2 * i + 3 for i in range(groups)]


def same_padding_amount(size, kernel: int, stride: int, dilation: int):
    """Total TF 'SAME' padding along one axis (timm `get_same_padding`).

    `size` is an int, or a 0-d tensor while the TorchScript ONNX exporter traces; the ceil
    division avoids negative operands because ONNX integer Div truncates where Python floors.
    """
    out = (size + stride - 1) // stride
    pad = (out - 1) * stride + (kernel - 1) * dilation + 1 - size
    return pad.clamp(min=0) if isinstance(pad, torch.Tensor) else max(pad, 0)


def is_static_same_padding(kernel: int, stride: int, dilation: int) -> bool:
    """At stride 1 with an odd effective kernel, TF 'SAME' equals symmetric padding."""
    return stride == 1 and (dilation * (kernel - 1)) % 2 == 0


class Conv2dSame(nn.Conv2d):
    """A conv with TensorFlow 'SAME' padding, computed from the input size at run time.

    At stride 2 TF pads less on the top/left than on the bottom/right (and not at all on an
    odd input for a 3x3), which no fixed symmetric padding reproduces, so checkpoints trained
    in TF (tf_mixnet_*) need this to give the same numbers.  Same keys as nn.Conv2d.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride, 0, dilation, groups, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        pad_h = same_padding_amount(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = same_padding_amount(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
        if isinstance(pad_h, torch.Tensor) or pad_h or pad_w:  # traced sizes: always pad (a no-op at 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def create_conv2d_padded(in_channels: int, out_channels: int, kernel_size: int, *, stride: int = 1,
                         dilation: int = 1, groups: int = 1, padding: str = "symmetric",
                         bias: bool = False) -> nn.Conv2d:
    """One conv with the requested padding style; 'same' costs a Pad only when it must."""
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of {PADDINGS}")
    if padding == "same" and not is_static_same_padding(kernel_size, stride, dilation):
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, dilation, groups, bias)
    # PyTorch-style symmetric padding as timm `get_padding`: k//2 for odd kernels at any stride.
    pad = ((stride - 1) + dilation * (kernel_size - 1)) // 2
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, pad, dilation, groups, bias)


class MixConv2d(nn.ModuleDict):
    """Mixed depthwise conv: a drop-in for a depthwise `nn.Conv2d` (or, with depthwise=False,
    a grouped conv with one dense conv per channel group, timm's `a1.1` / `p1.1` pointwise).

    kernel_sizes: one kernel per group; an int k means the paper's default list for k groups
        (3, 5, ..., 2k+1).
    out_channels: in_channels * channel multiplier for depthwise; defaults to in_channels.
    partition: 'equal' (C//g, remainder to group 0) or 'exponential' (1/2, 1/4, ..., rest).
    padding: 'symmetric' (k//2) or 'same' (TF-style, asymmetric at stride 2).
    dilated: replace each KxK kernel by 3x3 with dilation (K-1)/2 (same receptive field,
        fewer weights); only at stride 1, as in the paper's ablation.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None,
                 kernel_sizes: int | Sequence[int] = (3, 5, 7), *, stride: int = 1,
                 padding: str = "symmetric", partition: str = "equal", dilated: bool = False,
                 depthwise: bool = True, bias: bool = False):
        super().__init__()
        kernel_sizes = default_kernel_sizes(kernel_sizes) if isinstance(kernel_sizes, int) else list(kernel_sizes)
        out_channels = in_channels if out_channels is None else out_channels
        if dilated and stride != 1:
            raise ValueError("the dilated MixConv variant is defined only at stride 1 (paper section 4.2)")
        if any(k % 2 == 0 for k in kernel_sizes):
            raise ValueError(f"MixConv kernels must be odd, got {kernel_sizes}")
        in_splits = split_channels(in_channels, len(kernel_sizes), partition)
        out_splits = self._out_splits(in_splits, out_channels, depthwise, partition)
        for idx, (k, cin, cout) in enumerate(zip(kernel_sizes, in_splits, out_splits)):
            kernel, dilation = (3, (k - 1) // 2) if dilated and k > 3 else (k, 1)
            self.add_module(str(idx), create_conv2d_padded(
                cin, cout, kernel, stride=stride, dilation=dilation,
                groups=cin if depthwise else 1, padding=padding, bias=bias))
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_sizes, self.splits, self.depthwise = kernel_sizes, in_splits, depthwise

    @staticmethod
    def _out_splits(in_splits, out_channels, depthwise, partition):
        in_channels = sum(in_splits)
        if not depthwise:
            return split_channels(out_channels, len(in_splits), partition)
        if out_channels % in_channels:
            raise ValueError(f"depthwise out_channels ({out_channels}) must be a multiple of "
                             f"in_channels ({in_channels})")
        # Each depthwise group keeps its own channel multiplier, so derive from the input split.
        return [c * (out_channels // in_channels) for c in in_splits]

    def extra_repr(self) -> str:
        return f"kernels={self.kernel_sizes}, splits={self.splits}, depthwise={self.depthwise}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(part) for conv, part in zip(self.values(), parts)], dim=1)


def create_conv2d(in_channels: int, out_channels: int, kernel_size: int | Sequence[int], *,
                  stride: int = 1, dilation: int = 1, depthwise: bool = False, groups: int = 1,
                  padding: str = "symmetric", bias: bool = False) -> nn.Module:
    """timm's `create_conv2d` rule: a list of kernels -> MixConv2d, an int -> one plain conv.

    A one-element list is a plain conv too, so a g=1 "MixConv" is key-for-key a depthwise
    conv (`.weight`, no group index), like timm.
    """
    if isinstance(kernel_size, (list, tuple)) and len(kernel_size) > 1:
        if dilation != 1:
            raise ValueError("MixConv2d with an output-stride dilation is not supported")
        return MixConv2d(in_channels, out_channels, list(kernel_size), stride=stride,
                         padding=padding, depthwise=depthwise, bias=bias)
    k = kernel_size[0] if isinstance(kernel_size, (list, tuple)) else kernel_size
    return create_conv2d_padded(in_channels, out_channels, k, stride=stride, dilation=dilation,
                                groups=in_channels if depthwise else groups, padding=padding, bias=bias)


def is_depthwise_conv(module: nn.Module) -> bool:
    return (isinstance(module, nn.Conv2d) and module.groups > 1
            and module.groups == module.in_channels and module.out_channels % module.in_channels == 0)


def replace_depthwise_with_mixconv(model: nn.Module, kernel_sizes: int | Sequence[int] = (3, 5, 7), *,
                                   partition: str = "equal", padding: str = "symmetric") -> list[str]:
    """Swap every depthwise nn.Conv2d in `model` (in place) for a MixConv2d (paper section 3.3).

    Each replacement keeps the conv's channels, multiplier, stride and bias; its weights are
    freshly initialised (the kernels change shape), so the model needs (re)training.
    A depthwise conv with fewer channels than groups gets as many groups as it has channels.
    Returns the names of the replaced modules.
    """
    kernel_sizes = default_kernel_sizes(kernel_sizes) if isinstance(kernel_sizes, int) else list(kernel_sizes)
    replaced = []
    for name, module in list(model.named_modules()):
        if not is_depthwise_conv(module) or isinstance(module, Conv2dSame):
            continue
        if module.dilation != (1, 1) or module.stride[0] != module.stride[1]:
            continue  # output-stride dilation / anisotropic stride: not MixConv's domain, keep it
        groups = kernel_sizes[: module.in_channels]
        mixconv = MixConv2d(module.in_channels, module.out_channels, groups, stride=module.stride[0],
                            padding=padding, partition=partition, bias=module.bias is not None)
        mixconv.to(device=module.weight.device, dtype=module.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, mixconv)
        replaced.append(name)
    return replaced
