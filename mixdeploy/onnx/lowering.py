"""MixConv lowerings: the same function, different op graphs for the target runtime.

- `split`:     Split -> one depthwise Conv per group -> Concat (the recognized form; no-op).
- `pad`:       every group's kernel zero-padded (centered) to the largest kernel, one
               depthwise Conv over all channels: fewer ops, more MACs (reported).
- `decompose`: each group with a kernel over 5x5 becomes a sum of depthwise convs of at
               most 5x5 over shifted windows of the once-padded input. XNNPACK has fast
               depthwise kernels only up to 5x5; 7x7/9x9 fall to a generic path ~10x
               slower per MAC (notes/tflite.md), so four 5x5 pieces beat one 9x9.
- `pad_decompose`: `pad`, then the one big depthwise conv decomposed: no Split/Concat at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import (ConvInfo, Namer, add_initializer, conv_attributes, new_node, replace_value,
                                  spatial_of)
from mixdeploy.onnx.passes.branches import SplitConvConcat

LOWERINGS = ("split", "pad", "decompose", "pad_decompose")
MAX_FAST_KERNEL = 5
# Exact pieces (5x4, 4x4 ...) by default: zero-padding them to 3x3/5x5 measured no faster
# (benchmarks/lowering_speed.py, docs/rewrites.md) and costs MACs.
ODD_PIECES = False


@dataclass
class LoweringOutcome:
    lowering: str                 # what was applied (may differ from asked: see `note`)
    extra_macs: int = 0           # MACs added over the split form (pad lowering computes zeros)
    note: str = ""
    nodes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- tiling

def split_extent(k: int, max_piece: int = MAX_FAST_KERNEL) -> list[tuple[int, int]]:
    """Cut a kernel extent into the fewest, most even runs of at most `max_piece` taps.

    9 -> [(0,5), (5,9)], 7 -> [(0,4), (4,7)], 11 -> [(0,4), (4,8), (8,11)].
    """
    n = math.ceil(k / max_piece)
    sizes = [k // n + (1 if i < k % n else 0) for i in range(n)]
    bounds, start = [], 0
    for s in sizes:
        bounds.append((start, start + s))
        start += s
    return bounds


def kernel_tiles(kernel: tuple[int, int], max_piece: int = MAX_FAST_KERNEL) -> list[tuple[int, int, int, int]]:
    """Non-overlapping (row0, row1, col0, col1) pieces covering a kH x kW kernel exactly once."""
    return [(r0, r1, c0, c1) for r0, r1 in split_extent(kernel[0], max_piece)
            for c0, c1 in split_extent(kernel[1], max_piece)]


def odd_piece(start: int, stop: int, k: int) -> tuple[int, int]:
    """Widen the run [start, stop) to an odd length inside [0, k), growing backwards.

    An even piece (4 taps) becomes 5 with one zero tap overlapping the previous piece,
    so every piece is 3x3 or 5x5, the shapes XNNPACK has dedicated kernels for.
    """
    length = stop - start
    if length % 2:
        return start, stop
    return (stop - length - 1, stop) if stop - length - 1 >= 0 else (start, start + length + 1)


# ---------------------------------------------------------------- pad lowering

def padded_kernel_layout(match: SplitConvConcat) -> tuple[int, int, list[int]] | None:
    """(kH, kW, pads) of the single conv, if every group lines up once centered in it."""
    kh = max(c.kernel[0] for c in match.convs)
    kw = max(c.kernel[1] for c in match.convs)
    if any(c.dilations != (1, 1) for c in match.convs):
        return None
    layouts = set()
    for c in match.convs:
        dh, dw = kh - c.kernel[0], kw - c.kernel[1]
        if dh % 2 or dw % 2:
            return None
        t, l, b, r = c.pads
        layouts.add((t + dh // 2, l + dw // 2, b + dh // 2, r + dw // 2))
    return (kh, kw, list(layouts.pop())) if len(layouts) == 1 else None


def lower_mixconv_pad(graph: ir.Graph, namer: Namer, match: SplitConvConcat) -> LoweringOutcome:
    layout = padded_kernel_layout(match)
    if layout is None:
        return LoweringOutcome("split", note="groups do not share one center; kept split")
    kh, kw, pads = layout
    weights, biases, extra = [], [], 0
    out_hw = spatial_of(match.concat.outputs[0])
    for c in match.convs:
        dh, dw = (kh - c.kernel[0]) // 2, (kw - c.kernel[1]) // 2
        weights.append(np.pad(c.weight, ((0, 0), (0, 0), (dh, dh), (dw, dw))))
        biases.append(c.bias if c.bias is not None else np.zeros(c.out_channels, c.weight.dtype))
        if out_hw:
            extra += c.out_channels * (kh * kw - c.kernel[0] * c.kernel[1]) * out_hw[0] * out_hw[1]
    channels = sum(match.out_channels)
    inputs = [match.split.inputs[0],
              add_initializer(graph, namer, f"{match.name}.weight", np.concatenate(weights)),
              add_initializer(graph, namer, f"{match.name}.bias", np.concatenate(biases))]
    conv = new_node(namer, match.name, "Conv", inputs,
                    conv_attributes(channels, match.convs[0].strides, pads, kernel=(kh, kw)))
    conv.outputs[0].shape, conv.outputs[0].type = match.concat.outputs[0].shape, match.concat.outputs[0].type
    graph.insert_before(match.concat, conv)
    replace_value(match.concat.outputs[0], conv.outputs[0])
    return LoweringOutcome("pad", extra_macs=extra, nodes=[conv.name])


# ---------------------------------------------------------------- decompose lowering

def decompose_depthwise_conv(graph: ir.Graph, namer: Namer, conv: ConvInfo,
                             max_piece: int = MAX_FAST_KERNEL, odd_pieces: bool = ODD_PIECES) -> list[str]:
    """Rewrite one depthwise conv as Pad -> per piece (Slice -> small depthwise Conv) -> Add chain.

    Exact: every kernel tap sits in exactly one piece, and piece (r0, c0) reads the padded
    input shifted by (r0, c0), i.e. the taps it owns. Pad once, slice per piece (each
    SLICE in TFLite is a cheap copy that keeps the int8 scale), convs unpadded (VALID).
    """
    node, x = conv.node, conv.node.inputs[0]
    hw = spatial_of(x)
    if hw is None:
        return []
    t, l, b, r = conv.pads
    sh, sw = conv.strides
    dh, dw = conv.dilations
    hp, wp = hw[0] + t + b, hw[1] + l + r
    kh, kw = conv.kernel
    out_h, out_w = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    new_nodes = []
    padded = x
    if any(conv.pads):
        pads = add_initializer(graph, namer, f"{node.name}.pads", np.array([0, 0, t, l, 0, 0, b, r], np.int64))
        pad = new_node(namer, f"{node.name}/Pad", "Pad", [x, pads], {"mode": "constant"})
        new_nodes.append(pad)
        padded = pad.outputs[0]
    total = None
    for i, (a0, a1, b0, b1) in enumerate(kernel_tiles(conv.kernel, max_piece)):
        # Taps [a0:a1, b0:b1] are this piece's own; [r0:r1, c0:c1] is the (maybe wider) kernel it runs.
        (r0, r1), (c0, c1) = ((odd_piece(a0, a1, kh), odd_piece(b0, b1, kw)) if odd_pieces
                              else ((a0, a1), (b0, b1)))
        sub_kernel = np.zeros((conv.out_channels, 1, r1 - r0, c1 - c0), conv.weight.dtype)
        sub_kernel[:, :, a0 - r0:a1 - r0, b0 - c0:b1 - c0] = conv.weight[:, :, a0:a1, b0:b1]
        # Window of the padded input that this piece reads for all outputs.
        row_start, col_start = r0 * dh, c0 * dw
        row_stop = row_start + (out_h - 1) * sh + dh * (r1 - r0 - 1) + 1
        col_stop = col_start + (out_w - 1) * sw + dw * (c1 - c0 - 1) + 1
        window = padded
        if (row_start, col_start, row_stop, col_stop) != (0, 0, hp, wp):
            starts = add_initializer(graph, namer, f"{node.name}.piece{i}.starts", np.array([row_start, col_start], np.int64))
            ends = add_initializer(graph, namer, f"{node.name}.piece{i}.ends", np.array([row_stop, col_stop], np.int64))
            axes = add_initializer(graph, namer, f"{node.name}.piece{i}.axes", np.array([2, 3], np.int64))
            sl = new_node(namer, f"{node.name}/piece{i}/Slice", "Slice", [padded, starts, ends, axes])
            new_nodes.append(sl)
            window = sl.outputs[0]
        inputs = [window, add_initializer(graph, namer, f"{node.name}.piece{i}.weight", sub_kernel)]
        if i == 0 and conv.bias is not None:  # the bias is added once, by the first piece
            inputs.append(add_initializer(graph, namer, f"{node.name}.piece{i}.bias", conv.bias))
        piece = new_node(namer, f"{node.name}/piece{i}", "Conv", inputs,
                         conv_attributes(conv.group, conv.strides, (0, 0, 0, 0), conv.dilations, kernel=(r1 - r0, c1 - c0)))
        new_nodes.append(piece)
        if total is None:
            total = piece.outputs[0]
        else:
            add = new_node(namer, f"{node.name}/piece{i}/Add", "Add", [total, piece.outputs[0]])
            new_nodes.append(add)
            total = add.outputs[0]
    total.shape, total.type = node.outputs[0].shape, node.outputs[0].type
    graph.insert_before(node, new_nodes)
    replace_value(node.outputs[0], total)
    return [n.name for n in new_nodes]


def lower_mixconv_decompose(graph: ir.Graph, namer: Namer, match: SplitConvConcat,
                            max_piece: int = MAX_FAST_KERNEL) -> LoweringOutcome:
    nodes = []
    for c in match.convs:
        if max(c.kernel) > max_piece:
            nodes += decompose_depthwise_conv(graph, namer, c, max_piece)
    if not nodes:
        return LoweringOutcome("split", note=f"no kernel over {max_piece}x{max_piece}; kept split")
    return LoweringOutcome("decompose", nodes=nodes)


def lower_mixconv_pad_decompose(graph: ir.Graph, namer: Namer, match: SplitConvConcat,
                                max_piece: int = MAX_FAST_KERNEL) -> LoweringOutcome:
    from mixdeploy.onnx.graph import conv_info

    padded = lower_mixconv_pad(graph, namer, match)
    if padded.lowering != "pad":
        return padded
    big = conv_info(next(n for n in graph if n.name == padded.nodes[0]))
    if max(big.kernel) <= max_piece:
        return padded
    nodes = decompose_depthwise_conv(graph, namer, big, max_piece)
    return LoweringOutcome("pad_decompose", extra_macs=padded.extra_macs, nodes=nodes)


def lower_mixconv(graph: ir.Graph, namer: Namer, match: SplitConvConcat, lowering: str) -> LoweringOutcome:
    if lowering == "split":
        return LoweringOutcome("split")
    if lowering == "pad":
        return lower_mixconv_pad(graph, namer, match)
    if lowering == "decompose":
        return lower_mixconv_decompose(graph, namer, match)
    if lowering == "pad_decompose":
        return lower_mixconv_pad_decompose(graph, namer, match)
    raise ValueError(f"unknown lowering {lowering!r}; choose one of {', '.join(LOWERINGS)}")
