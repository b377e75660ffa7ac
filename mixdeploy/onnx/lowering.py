"""MixConv lowerings: the same function, different op graphs for the target runtime.

- `split`:     Split -> one depthwise Conv per group -> Concat (the recognized form; no-op).
- `pad`:       every group's kernel zero-padded (centered) to the largest kernel, one
               depthwise Conv over all channels: fewer ops, more MACs (reported).
- `decompose`: each group with a kernel over 25 taps (7x7 and up) becomes a sum of
               depthwise convs of at most 25 taps over shifted windows of the once-padded
               input. XNNPACK's fast depthwise kernels stop at 25 taps; 7x7/9x9 fall to a
               generic path ~10x slower per MAC (docs/rewrites.md, "The measurements"), so four pieces beat one 9x9.
- `pad_decompose`: `pad`, then the one big depthwise conv decomposed: no Split/Concat at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mixdeploy.onnx.graph import (ConvInfo, Namer, add_initializer, add_to_sum, conv_attributes, conv_info, new_node, replace_value,
                                  spatial_of)
from mixdeploy.onnx.passes.branches import SplitConvConcat, replace_by_one_conv

# XNNPACK's depthwise microkernels take up to 25 taps in one pass (a 5x5, but also 7x3 or
# 4x6); bigger kernels fall to a slow generic path. Its kernels come in tap tiles (fp32 also
# has a 4-tap one; int8 timings did not show it, so it is left out):
TAP_TILES = (9, 25)
MAX_FAST_TAPS = TAP_TILES[-1]
# What one more piece costs beyond its taps (its Slice and Add; in int8 the Add requantizes),
# in taps. With it, the model below ranks the tilings we timed as measured (docs/rewrites.md:
# 7x7 as 7x3+7x3+7x1 beat the 5x5 grid, 11x11 in 3 bands (6 pieces) beat the 9-piece grid).
PIECE_OVERHEAD = 9


@dataclass
class LoweringOutcome:
    lowering: str                 # what was applied (may differ from asked: see `note`)
    extra_macs: int = 0           # MACs added over the split form (pad lowering computes zeros)
    note: str = ""
    nodes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- tiling

Tile = tuple[int, int, int, int]  # row0, row1, col0, col1 (half-open)


def tap_cost(taps: int) -> int:
    """Taps a microkernel actually runs for a piece of `taps` taps (the tile it rounds up to)."""
    return next(t for t in TAP_TILES if taps <= t)


def band_tiles(row0: int, height: int, width: int) -> list[Tile]:
    """One band of rows cut greedily into the widest pieces that fit the fast path."""
    step = MAX_FAST_TAPS // height
    return [(row0, row0 + height, c, min(c + step, width)) for c in range(0, width, step)]


def tiling_cost(tiles: list[Tile]) -> int:
    return sum(tap_cost((r1 - r0) * (c1 - c0)) + PIECE_OVERHEAD for r0, r1, c0, c1 in tiles)


def _rank(tiles: list[Tile]) -> tuple[int, int, int]:
    # ties: fewer pieces, then fewer bands (full-height strips measured fastest for 7x7 in int8)
    return tiling_cost(tiles), len(tiles), len({(r0, r1) for r0, r1, _, _ in tiles})


def _best_band_tiling(rows: int, cols: int) -> list[Tile]:
    """Cheapest split of the rows into bands (each band cut by band_tiles); exhaustive DP."""
    best: dict[int, list[Tile]] = {0: []}
    for end in range(1, rows + 1):
        options = []
        for height in range(1, min(end, MAX_FAST_TAPS) + 1):
            options.append(best[end - height] + band_tiles(end - height, height, cols))
        best[end] = min(options, key=_rank)
    return best[rows]


def kernel_tiles(kernel: tuple[int, int]) -> list[Tile]:
    """Non-overlapping pieces covering a kH x kW kernel exactly once, each <= 25 taps,
    chosen by the cost model above (row bands or, transposed, column bands).

    7x7 -> 7x3, 7x3, 7x1 (3 pieces); 9x9 -> 4 pieces; 11x11 -> 6 pieces; 5x5 and smaller: itself.
    """
    kh, kw = kernel
    if kh * kw <= MAX_FAST_TAPS:
        return [(0, kh, 0, kw)]
    by_rows = _best_band_tiling(kh, kw)
    by_cols = [(c0, c1, r0, r1) for r0, r1, c0, c1 in _best_band_tiling(kw, kh)]
    return min((by_rows, by_cols), key=_rank)


def grid_tiles(kernel: tuple[int, int], max_piece: int = 5) -> list[Tile]:
    """The plain alternative: a grid of at most max_piece x max_piece pieces (9x9 -> 4, 11x11 -> 9).
    Kept for benchmarks/lowering_speed.py, which compares it with kernel_tiles."""
    def runs(k):
        n = math.ceil(k / max_piece)
        edges = [round(i * k / n) for i in range(n + 1)]
        return list(zip(edges[:-1], edges[1:]))
    return [(r0, r1, c0, c1) for r0, r1 in runs(kernel[0]) for c0, c1 in runs(kernel[1])]


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
    weights, extra = [], 0
    out_hw = spatial_of(match.concat.outputs[0])
    for c in match.convs:
        dh, dw = (kh - c.kernel[0]) // 2, (kw - c.kernel[1]) // 2
        weights.append(np.pad(c.weight, ((0, 0), (0, 0), (dh, dh), (dw, dw))))
        if out_hw:
            extra += c.out_channels * (kh * kw - c.kernel[0] * c.kernel[1]) * out_hw[0] * out_hw[1]
    conv = replace_by_one_conv(graph, namer, match, np.concatenate(weights), match.stacked_bias(),
                               conv_attributes(sum(match.out_channels), match.convs[0].strides, pads, kernel=(kh, kw)))
    return LoweringOutcome("pad", extra_macs=extra, nodes=[conv.name])


# ---------------------------------------------------------------- decompose lowering

def decompose_depthwise_conv(graph: ir.Graph, namer: Namer, conv: ConvInfo,
                             tiles: list[Tile] | None = None) -> list[str]:
    """Rewrite one depthwise conv as Pad -> per piece (Slice -> small depthwise Conv) -> Add chain.

    Exact: every kernel tap sits in exactly one piece, and piece (r0, c0) reads the padded
    input shifted by (r0, c0), i.e. the taps it owns. Pad once, slice per piece, convs unpadded
    (VALID); the piece_pads pass then gives each piece its window as its own pads (see there).
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
    for i, (r0, r1, c0, c1) in enumerate(tiles or kernel_tiles(conv.kernel)):
        sub_kernel = np.ascontiguousarray(conv.weight[:, :, r0:r1, c0:c1])
        # Window of the padded input that this piece reads for all outputs.
        row_start, col_start = r0 * dh, c0 * dw
        row_stop = row_start + (out_h - 1) * sh + dh * (r1 - r0 - 1) + 1
        col_stop = col_start + (out_w - 1) * sw + dw * (c1 - c0 - 1) + 1
        if (_only_padding(row_start, row_stop, t, hw[0]) or _only_padding(col_start, col_stop, l, hw[1])):
            # On small feature maps a big kernel's outer pieces read nothing but zero padding:
            # they add exactly 0, and int8 cannot even calibrate them (a constant zero range).
            continue
        window = padded
        if (row_start, col_start, row_stop, col_stop) != (0, 0, hp, wp):
            starts = add_initializer(graph, namer, f"{node.name}.piece{i}.starts", np.array([row_start, col_start], np.int64))
            ends = add_initializer(graph, namer, f"{node.name}.piece{i}.ends", np.array([row_stop, col_stop], np.int64))
            axes = add_initializer(graph, namer, f"{node.name}.piece{i}.axes", np.array([2, 3], np.int64))
            sl = new_node(namer, f"{node.name}/piece{i}/Slice", "Slice", [padded, starts, ends, axes])
            new_nodes.append(sl)
            window = sl.outputs[0]
        inputs = [window, add_initializer(graph, namer, f"{node.name}.piece{i}.weight", sub_kernel)]
        if total is None and conv.bias is not None:  # the bias is added once, by the first piece
            inputs.append(add_initializer(graph, namer, f"{node.name}.piece{i}.bias", conv.bias))
        piece = new_node(namer, f"{node.name}/piece{i}", "Conv", inputs,
                         conv_attributes(conv.group, conv.strides, (0, 0, 0, 0), conv.dilations, kernel=(r1 - r0, c1 - c0)))
        new_nodes.append(piece)
        total = add_to_sum(namer, f"{node.name}/piece{i}/Add", total, piece.outputs[0], new_nodes)
    total.shape, total.type = node.outputs[0].shape, node.outputs[0].type
    graph.insert_before(node, new_nodes)
    replace_value(node.outputs[0], total)
    return [n.name for n in new_nodes]


def _only_padding(start: int, stop: int, pad_before: int, size: int) -> bool:
    """Does the padded-input interval [start, stop) lie wholly in the zero padding?"""
    return stop <= pad_before or start >= pad_before + size


def is_slow_kernel(kernel: tuple[int, int]) -> bool:
    return kernel[0] * kernel[1] > MAX_FAST_TAPS


def lower_mixconv_decompose(graph: ir.Graph, namer: Namer, match: SplitConvConcat) -> LoweringOutcome:
    nodes = []
    for c in match.convs:
        if is_slow_kernel(c.kernel):
            nodes += decompose_depthwise_conv(graph, namer, c)
    if not nodes:
        return LoweringOutcome("split", note=f"no kernel over {MAX_FAST_TAPS} taps; kept split")
    return LoweringOutcome("decompose", nodes=nodes)


def lower_mixconv_pad_decompose(graph: ir.Graph, namer: Namer, match: SplitConvConcat) -> LoweringOutcome:
    padded = lower_mixconv_pad(graph, namer, match)
    if padded.lowering != "pad":
        return padded
    big = conv_info(next(n for n in graph if n.name == padded.nodes[0]))
    if not is_slow_kernel(big.kernel):
        return padded
    nodes = decompose_depthwise_conv(graph, namer, big)
    return LoweringOutcome("pad_decompose", extra_macs=padded.extra_macs, nodes=nodes)


def keep_split(graph: ir.Graph, namer: Namer, match: SplitConvConcat) -> LoweringOutcome:
    return LoweringOutcome("split")


# name -> how a MixConv is lowered; every entry takes (graph, namer, match) and returns a LoweringOutcome
LOWER = {"split": keep_split, "pad": lower_mixconv_pad, "decompose": lower_mixconv_decompose,
         "pad_decompose": lower_mixconv_pad_decompose}
LOWERINGS = tuple(LOWER)
