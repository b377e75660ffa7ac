"""Error-compensating weight rounding: int8 weights chosen for the layer's output, not tap by tap.

Round-to-nearest makes each weight's error as small as it can be, but what the network sees is
the error of the conv's output, sum_taps (W_q - W) x, whose size depends on how the inputs
correlate. With the second moment H = E[x x^T] of each conv's input (measured on the float
model during calibration), the output error of a row w is (w_q - w)^T H (w_q - w). Rounding
the taps one at a time and moving each rounding error onto the taps not yet rounded, weighted
by H^-1, lowers that error (OBQ/GPTQ: Frantar et al., "GPTQ", ICLR 2023; the same aim as
AdaRound, Nagel et al., ICML 2020, without its per-layer training loop).

Scales stay what the quantizer chose (max |W| / 127 per output channel), so the bias scale
(s_in * s_w) and every other tensor of the quantized model stay valid: only int8 weight values
change. Measured in docs/accuracy.md.
"""

from __future__ import annotations

import numpy as np

from mixdeploy.tflite.bias_correction import CONV_OPS, ConvGeometry, padded_taps

DAMPING = 0.01          # H + 1% of its mean diagonal: keeps the inverse stable for dead inputs


def patches(x: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Input windows of a conv: (positions, kh*kw, channels) for one NHWC image (or a batch)."""
    if g.op == "FULLY_CONNECTED":
        return x.reshape(-1, 1, x.shape[-1])
    padded, taps = padded_taps(x.reshape((-1,) + x.shape[-3:]), g, np.float32)
    (kh, kw), (oh, ow) = g.kernel, g.output_hw
    windows = np.stack([padded[:, rows, cols] for rows, cols in taps], axis=3)
    return windows.reshape(len(padded) * oh * ow, kh * kw, padded.shape[-1])


class SecondMomentObserver:
    """E[x x^T] of every conv's input windows over the calibration images.

    Depthwise: one (taps x taps) matrix per channel. CONV_2D / FULLY_CONNECTED: one
    (taps*channels x taps*channels) matrix per group, kept only for 1x1 convs and small kernels
    (the stem), where it is at most MAX_ROW_WIDTH wide.
    """

    MAX_ROW_WIDTH = 2048
    # Windows kept per image and layer: a 112x112 map has 12544, and E[x x^T] over a random
    # subset of them is as good for rounding while costing a fraction of the time.
    MAX_WINDOWS = 2048

    def __init__(self, geometries: list[ConvGeometry], groups: dict[str, int], seed: int = 0):
        self.geometries = geometries
        self.groups = groups
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.rng = np.random.default_rng(seed)

    def observe(self, get_tensor) -> None:
        for g in self.geometries:
            windows = patches(get_tensor(g.input_index).astype(np.float32), g)      # P, T, C
            if len(windows) > self.MAX_WINDOWS:
                windows = windows[np.sort(self.rng.choice(len(windows), self.MAX_WINDOWS, replace=False))]
            if g.op == "DEPTHWISE_CONV_2D":
                per_channel = np.ascontiguousarray(windows.transpose(2, 0, 1))      # C, P, T
                moment = np.matmul(per_channel.transpose(0, 2, 1), per_channel).astype(np.float64)
            else:
                groups = self.groups.get(g.key, 1)
                p, t, c = windows.shape
                grouped = windows.reshape(p, t, groups, c // groups).transpose(2, 0, 1, 3).reshape(groups, p, -1)
                if grouped.shape[-1] > self.MAX_ROW_WIDTH:
                    continue
                moment = np.matmul(grouped.transpose(0, 2, 1), grouped).astype(np.float64)
            self.sums[g.key] = self.sums[g.key] + moment if g.key in self.sums else moment
            self.counts[g.key] = self.counts.get(g.key, 0) + windows.shape[0]

    def moments(self) -> dict[str, np.ndarray]:
        return {name: total / self.counts[name] for name, total in self.sums.items()}


def round_rows(weights: np.ndarray, scales: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """int8 values for weight rows (R, K) with per-row scales, minimizing (w_q-w)^T H (w_q-w)
    greedily, tap by tap; H is shared by all rows (K, K) or given per row (R, K, K)."""
    w = weights.astype(np.float64).copy()
    width = w.shape[1]
    eye = np.eye(width)
    h = moment + DAMPING * np.mean(np.diagonal(moment, axis1=-2, axis2=-1), axis=-1)[..., None, None] * eye
    try:
        # H^-1 = U^T U with U upper triangular: row j of U spreads tap j's error over the later taps
        upper = np.swapaxes(np.linalg.cholesky(np.linalg.inv(h)), -1, -2)
    except np.linalg.LinAlgError:
        return np.clip(np.rint(weights / scales[:, None]), -127, 127).astype(np.int8)
    shared = upper.ndim == 2
    q = np.empty_like(w)
    s = scales.astype(np.float64)
    for j in range(width):
        q[:, j] = np.clip(np.rint(w[:, j] / s), -127, 127)
        if j + 1 == width:
            break
        if shared:
            error = (w[:, j] - q[:, j] * s) / upper[j, j]
            w[:, j + 1:] -= np.outer(error, upper[j, j + 1:])
        else:
            error = (w[:, j] - q[:, j] * s) / upper[:, j, j]
            w[:, j + 1:] -= error[:, None] * upper[:, j, j + 1:]
    return q.astype(np.int8)


def rounded_weights(op: str, float_weights: np.ndarray, scales: np.ndarray, moment: np.ndarray,
                    groups: int = 1) -> np.ndarray:
    """int8 weights in the TFLite layout of `op` (CONV_2D O,H,W,I; DEPTHWISE 1,H,W,C; FC O,I)."""
    if op == "DEPTHWISE_CONV_2D":
        _, kh, kw, c = float_weights.shape
        rows = float_weights.reshape(kh * kw, c).T                              # C, T
        return round_rows(rows, scales, moment).T.reshape(1, kh, kw, c)
    out_channels = float_weights.shape[0]
    rows = float_weights.reshape(out_channels, -1)                              # O, T*I (tap-major)
    per_group = out_channels // groups
    result = np.empty(rows.shape, np.int8)
    for group in range(groups):
        block = slice(group * per_group, (group + 1) * per_group)
        result[block] = round_rows(rows[block], scales[block], moment[group])
    return result.reshape(float_weights.shape)


def conv_groups(model) -> dict[str, int]:
    """Output name -> groups of each CONV_2D (input channels / filter input channels)."""
    from mixdeploy.tflite.bias_correction import conv_key
    from mixdeploy.tflite.inspect import op_name

    graph = model.subgraphs[0]
    groups = {}
    for op in graph.operators or []:
        if op_name(model, op) == "CONV_2D":
            in_channels = int(graph.tensors[op.inputs[0]].shape[-1])
            filter_in = int(graph.tensors[op.inputs[1]].shape[-1])
            groups[conv_key(graph, op)] = max(1, in_channels // max(filter_in, 1))
    return groups


def round_weights(quantized_model: bytes, float_model: bytes, moments: dict[str, np.ndarray],
                  groups: dict[str, int]) -> tuple[bytes, dict]:
    """The quantized model with error-compensated int8 weights where a moment was measured."""
    from tensorflow.lite.tools import flatbuffer_utils

    from mixdeploy.tflite.bias_correction import conv_key, float_conv_weights
    from mixdeploy.tflite.inspect import op_name, tflite_schema

    schema = tflite_schema()
    float_weights = float_conv_weights(flatbuffer_utils.convert_bytearray_to_object(float_model))
    model = flatbuffer_utils.convert_bytearray_to_object(quantized_model)
    graph = model.subgraphs[0]
    changed, rounded_ops = 0, 0
    for op in graph.operators or []:
        kind = op_name(model, op)
        if kind not in CONV_OPS:
            continue
        key = conv_key(graph, op)
        weight_t = graph.tensors[op.inputs[1]]
        if key not in moments or key not in float_weights or weight_t.type != schema.TensorType.INT8:
            continue
        buffer = model.buffers[weight_t.buffer]
        before = np.frombuffer(bytes(buffer.data), np.int8).reshape(weight_t.shape)
        scales = np.asarray(weight_t.quantization.scale, np.float64)
        after = rounded_weights(kind, float_weights[key], scales, moments[key], groups.get(key, 1))
        buffer.data = np.ascontiguousarray(after).view(np.uint8).reshape(-1)
        changed += int(np.count_nonzero(after != before))
        rounded_ops += 1
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), {
        "rounded_ops": rounded_ops, "changed_weights": changed}
