"""Bias correction: fold the mean error that int8 weight rounding adds to each conv into its bias.

Rounding a depthwise kernel of 9-121 taps to 255 levels per channel shifts that channel's output
mean by sum_taps (W_q - W) * E[x]: small per tap, but it is a bias, so it adds up through the
network instead of averaging out (Nagel et al., "Data-Free Quantization", 2019, section 4.2;
AIMET's bias correction). With the mean of each conv's input over the calibration images, the
shift is known exactly for every output channel, borders included:

    delta[c] = sum_{tap, cin} (W_q - W)[c, tap, cin] * T[tap, cin]

where T[tap, cin] is the mean of the input seen through that tap over all output positions
(zero where the tap reads padding; int8 padding is the zero point, i.e. exactly 0.0).
The quantized model's int32 bias then loses round(delta / (s_in * s_w[c])).

The input means come from the float model's run during calibration (calibrate.py), so the
correction costs one pass over each conv's mean input tensor, not another run of the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


@dataclass(frozen=True)
class ConvGeometry:
    """What a conv op needs for its tap means: where its input is, and how it slides."""

    op: str
    key: str               # conv_key: names the op in both the float and the quantized model
    input_index: int       # input tensor index in the float model
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    same_padding: bool = False
    kernel: tuple[int, int] = (1, 1)
    output_hw: tuple[int, int] = (1, 1)


def conv_key(graph, op) -> str:
    """A conv op's name in both models: its weight tensor's name. (Output names do not carry
    over: a conv feeding a float graph output gets a renamed output tensor in the quantized model.)"""
    return _name(graph.tensors[op.inputs[1]])


def _name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def conv_geometries(model) -> list[ConvGeometry]:
    """The conv-like ops of a (float) ModelT, in execution order."""
    from mixdeploy.tflite.inspect import op_name, tflite_schema

    schema = tflite_schema()
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators or []:
        kind = op_name(model, op)
        if kind not in CONV_OPS:
            continue
        out = graph.tensors[op.outputs[0]]
        weights = graph.tensors[op.inputs[1]]
        if kind == "FULLY_CONNECTED":
            found.append(ConvGeometry(kind, conv_key(graph, op), int(op.inputs[0])))
            continue
        options = op.builtinOptions
        found.append(ConvGeometry(
            kind, conv_key(graph, op), int(op.inputs[0]),
            stride=(options.strideH, options.strideW),
            dilation=(options.dilationHFactor, options.dilationWFactor),
            same_padding=options.padding == schema.Padding.SAME,
            kernel=(int(weights.shape[1]), int(weights.shape[2])),
            output_hw=(int(out.shape[1]), int(out.shape[2]))))
    return found


def padded_taps(x: np.ndarray, geometry: ConvGeometry, dtype) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """A batch of NHWC inputs zero-padded the way the conv pads them (int8 padding is the zero
    point, i.e. exactly 0.0), and per tap, row-major, the strided (rows, columns) it reads."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = geometry.kernel, geometry.stride, geometry.dilation, geometry.output_hw
    n, h, w, c = x.shape
    pad_top = pad_left = 0
    if geometry.same_padding:
        pad_top = max((oh - 1) * sh + (kh - 1) * dh + 1 - h, 0) // 2
        pad_left = max((ow - 1) * sw + (kw - 1) * dw + 1 - w, 0) // 2
    big_h = max((oh - 1) * sh + (kh - 1) * dh + 1, pad_top + h)
    big_w = max((ow - 1) * sw + (kw - 1) * dw + 1, pad_left + w)
    padded = np.zeros((n, big_h, big_w, c), dtype)
    padded[:, pad_top:pad_top + h, pad_left:pad_left + w] = x
    taps = [(slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw))
            for i in range(kh) for j in range(kw)]
    return padded, taps


def tap_means(mean_input: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """T[kh, kw, cin]: the mean over output positions of the input each tap reads (NHWC mean
    input of one image, batch dim dropped); for FULLY_CONNECTED the mean input vector."""
    if geometry.op == "FULLY_CONNECTED":
        return mean_input.reshape(-1, mean_input.shape[-1]).mean(0)
    padded, taps = padded_taps(mean_input.reshape((1,) + mean_input.shape[-3:]), geometry, np.float64)
    (kh, kw), (oh, ow) = geometry.kernel, geometry.output_hw
    means = np.stack([padded[0, rows, cols].sum((0, 1)) / (oh * ow) for rows, cols in taps])
    return means.reshape(kh, kw, -1)


class InputMeanObserver:
    """Running mean of each conv input over the calibration images (fed by calibrate.py)."""

    def __init__(self, geometries: list[ConvGeometry]):
        self.geometries = geometries
        self.inputs = sorted({g.input_index for g in geometries})
        self.sums: dict[int, np.ndarray] = {}
        self.count = 0

    def observe(self, get_tensor, weight: int = 1) -> None:
        """get_tensor(index) -> that tensor for `weight` images (batch first)."""
        for index in self.inputs:
            total = get_tensor(index).astype(np.float64).sum(0, keepdims=True)
            self.sums[index] = self.sums[index] + total if index in self.sums else total
        self.count += weight

    def tap_means(self) -> dict[str, np.ndarray]:
        """conv_key -> its tap means."""
        return {g.key: tap_means(self.sums[g.input_index] / self.count, g) for g in self.geometries}


def weight_rounding_shift(float_weights: np.ndarray, quantized, op: str, taps: np.ndarray) -> np.ndarray:
    """delta[c] per output channel, from float weights, the int8 weights + scales, and tap means.

    Layouts (TFLite): CONV_2D O,H,W,I (grouped: I = in / groups); DEPTHWISE_CONV_2D 1,H,W,C;
    FULLY_CONNECTED O,I.
    """
    q_values, scales = quantized
    if op == "DEPTHWISE_CONV_2D":
        error = q_values.astype(np.float64) * scales.reshape(1, 1, 1, -1) - float_weights
        channels = error.shape[-1]
        t = taps if taps.shape[-1] == channels else np.repeat(taps, channels // taps.shape[-1], axis=-1)
        return np.einsum("hwc,hwc->c", error[0], t)
    error = q_values.astype(np.float64) * scales.reshape((-1,) + (1,) * (q_values.ndim - 1)) - float_weights
    if op == "FULLY_CONNECTED":
        return error @ taps
    out_channels, _, _, per_group = error.shape
    groups = taps.shape[-1] // per_group
    t = taps.reshape(taps.shape[0], taps.shape[1], groups, per_group)
    group_of = np.arange(out_channels) // (out_channels // groups)
    return np.einsum("ohwi,ohwi->o", error, t[:, :, group_of, :].transpose(2, 0, 1, 3))


def correct_biases(quantized_model: bytes, float_model: bytes, taps_by_key: dict[str, np.ndarray]) -> tuple[bytes, dict]:
    """The quantized model with each conv's int32 bias corrected; and a summary of what moved."""
    from tensorflow.lite.tools import flatbuffer_utils

    from mixdeploy.tflite.inspect import op_name, tflite_schema

    schema = tflite_schema()
    float_obj = flatbuffer_utils.convert_bytearray_to_object(float_model)
    float_weights = float_conv_weights(float_obj)
    model = flatbuffer_utils.convert_bytearray_to_object(quantized_model)
    graph = model.subgraphs[0]
    corrected, shifts = 0, []
    for op in graph.operators or []:
        kind = op_name(model, op)
        if kind not in CONV_OPS or len(op.inputs) < 3 or op.inputs[2] < 0:
            continue
        key = conv_key(graph, op)
        weight_t, bias_t = graph.tensors[op.inputs[1]], graph.tensors[op.inputs[2]]
        if key not in taps_by_key or key not in float_weights or weight_t.type != schema.TensorType.INT8:
            continue
        bias_buffer = model.buffers[bias_t.buffer]
        if bias_t.type != schema.TensorType.INT32 or bias_buffer.data is None:
            continue
        q_values = np.frombuffer(bytes(model.buffers[weight_t.buffer].data), np.int8).reshape(weight_t.shape)
        w_scales = np.asarray(weight_t.quantization.scale, np.float64)
        delta = weight_rounding_shift(float_weights[key], (q_values, w_scales), kind, taps_by_key[key])
        bias_scales = np.asarray(bias_t.quantization.scale, np.float64)
        steps = np.rint(delta / bias_scales).astype(np.int64)
        bias = np.frombuffer(bytes(bias_buffer.data), np.int32).astype(np.int64) - steps
        bias_buffer.data = np.clip(bias, -2**31, 2**31 - 1).astype(np.int32).view(np.uint8)
        corrected += 1
        shifts.append(float(np.sqrt(np.mean((delta / np.maximum(bias_scales, 1e-30)) ** 2))))
    summary = {"corrected_ops": corrected,
               "rms_shift_in_bias_steps": round(float(np.mean(shifts)), 3) if shifts else 0.0}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), summary


def float_conv_weights(model) -> dict[str, np.ndarray]:
    from mixdeploy.tflite.inspect import op_name

    graph = model.subgraphs[0]
    out = {}
    for op in graph.operators or []:
        if op_name(model, op) in CONV_OPS:
            weight_t = graph.tensors[op.inputs[1]]
            data = model.buffers[weight_t.buffer].data
            if data is not None:
                out[conv_key(graph, op)] = np.frombuffer(bytes(data), np.float32).reshape(weight_t.shape).astype(np.float64)
    return out
