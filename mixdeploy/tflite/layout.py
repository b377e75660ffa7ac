"""NHWC layout bookkeeping for tracing an NCHW ONNX graph into TensorFlow ops.

The layout is decided once: every 4-D activation lives in NHWC (what TFLite's kernels
want), everything else keeps the ONNX (logical) axis order. Each traced value carries a
flag saying which of the two it is, so an op handler maps its axes/constants instead of
inserting TRANSPOSE ops. Constants stay numpy arrays until an op needs them, so handlers can
read weights, shapes and split sizes at conversion time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# logical NCHW axis -> position in the NHWC tensor, and back
NCHW_TO_NHWC = (0, 2, 3, 1)   # transpose perm that turns NCHW data into NHWC
NHWC_TO_NCHW = (0, 3, 1, 2)   # ... and back
# NHWC position i holds logical (NCHW) axis NCHW_TO_NHWC[i]: reorder per-axis lists with it
NCHW_AXIS_IN_NHWC = {0: 0, 1: 3, 2: 1, 3: 2}


@dataclass
class Value:
    """One tensor of the ONNX graph during tracing.

    data: a tf.Tensor (activation) or a numpy array (constant, folded at conversion time).
    nhwc: True when `data` is a 4-D activation stored NHWC for a logical NCHW tensor.
    """

    data: Any
    nhwc: bool = False

    def __post_init__(self):
        if isinstance(self.data, np.generic):   # numpy folds 0-d results to scalars
            self.data = np.asarray(self.data)

    @property
    def is_const(self) -> bool:
        return isinstance(self.data, np.ndarray)

    @property
    def rank(self) -> int:
        return len(self.data.shape)

    def logical_shape(self) -> list[int]:
        shape = [int(d) if d is not None else -1 for d in self.data.shape]
        if self.nhwc:
            return [shape[i] for i in NHWC_TO_NCHW]
        return shape


def nhwc_axis(axis: int, rank: int = 4) -> int:
    """Position of logical (NCHW) axis `axis` inside an NHWC tensor."""
    return NCHW_AXIS_IN_NHWC[axis % rank]


def const_to_nhwc_broadcast(const: np.ndarray) -> np.ndarray:
    """Re-lay a constant that broadcasts against an NCHW activation so it broadcasts against NHWC.

    ONNX broadcasting aligns trailing axes: a (C,1,1) bias becomes (1,C,1,1) logically, whose
    NHWC form is (1,1,1,C).
    """
    if const.ndim == 0 or const.size == 1:
        return const.reshape(())
    full = const.reshape((1,) * (4 - const.ndim) + const.shape)
    return np.transpose(full, NCHW_TO_NHWC)


def conv_padding_mode(pads: list[int], in_hw: list[int], kernel: list[int], strides: list[int],
                      dilations: list[int]) -> str | None:
    """'VALID' or 'SAME' when the ONNX pads equal what TF would do, else None (explicit PAD).

    ONNX pads are [top, left, bottom, right]. TF's SAME puts the odd pixel at the bottom/right.
    Pads that the conv never reads (trailing rows past the last window) don't matter, so they are
    compared after trimming to what the output actually uses.
    """
    used = used_conv_pads(pads, in_hw, kernel, strides, dilations)
    if not any(used):
        return "VALID"
    if used == tf_same_pads(in_hw, kernel, strides, dilations):
        return "SAME"
    return None


def used_conv_pads(pads, in_hw, kernel, strides, dilations) -> list[int]:
    """Drop bottom/right padding that no output window reaches (it changes nothing)."""
    top, left, bottom, right = pads
    used_end = []
    for size, k, s, d, begin, end in zip(in_hw, kernel, strides, dilations, (top, left), (bottom, right)):
        span = (k - 1) * d + 1
        out = (size + begin + end - span) // s + 1
        needed_end = max((out - 1) * s + span - size - begin, 0)
        used_end.append(min(end, needed_end))
    return [top, left, used_end[0], used_end[1]]


def tf_same_pads(in_hw, kernel, strides, dilations) -> list[int]:
    result_begin, result_end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        span = (k - 1) * d + 1
        out = -(-size // s)
        total = max((out - 1) * s + span - size, 0)
        result_begin.append(total // 2)
        result_end.append(total - total // 2)
    return [result_begin[0], result_begin[1], result_end[0], result_end[1]]
