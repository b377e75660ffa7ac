"""One small function per ONNX op, looked up in `OP_HANDLERS` (onnx2tf style).

Every handler has the signature `(ctx, inputs) -> list[Value]`: `ctx` gives attributes and
the node name (for errors), `inputs` are the node's input `Value`s (None for an omitted optional
input). 4-D activations are NHWC (see layout.py); handlers map ONNX's NCHW axes, pads and weight
layouts instead of inserting transposes. Constant-only arithmetic is folded in numpy.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mixdeploy.tflite.layout import (NCHW_TO_NHWC, NHWC_TO_NCHW, Value, const_to_nhwc_broadcast,
                                     conv_padding_mode, nhwc_axis, tf_same_pads)

INT64_MAX = np.iinfo(np.int64).max


# ---------------------------------------------------------------- helpers

def as_tensor(value: Value, dtype=None):
    if value.is_const:
        return tf.constant(value.data if dtype is None else value.data.astype(dtype))
    return value.data


def as_logical(value: Value) -> Value:
    """The value in ONNX axis order (needed by shape-changing ops such as Reshape)."""
    if not value.nhwc:
        return value
    n, h, w, c = value.data.shape
    if h == 1 and w == 1:
        # (N,1,1,C) and (N,C,1,1) have the same memory order: a reshape, not a transpose
        return Value(tf.reshape(value.data, [n, c, 1, 1]))
    return Value(tf.transpose(value.data, NHWC_TO_NCHW))


def as_nhwc(value: Value) -> Value:
    """A logical NCHW 4-D value in NHWC form (constants are transposed in numpy)."""
    if value.nhwc:
        return value
    if value.rank != 4:
        raise ValueError(f"expected a 4-D tensor, got rank {value.rank}")
    if value.is_const:
        return Value(np.ascontiguousarray(np.transpose(value.data, NCHW_TO_NHWC)), nhwc=True)
    n, c, h, w = value.data.shape
    if h == 1 and w == 1:
        return Value(tf.reshape(value.data, [n, 1, 1, c]), nhwc=True)
    return Value(tf.transpose(value.data, NCHW_TO_NHWC), nhwc=True)


def require_const(ctx, value: Value | None, what: str) -> np.ndarray:
    if value is None or not value.is_const:
        raise ctx.fail(f"{what} must be a constant (initializer); simplify the model with onnxsim first")
    return value.data


def optional_const(ctx, inputs, index, what, default=None):
    if len(inputs) > index and inputs[index] is not None:
        return require_const(ctx, inputs[index], what)
    return default


def align_for_broadcast(a: Value, b: Value) -> tuple[Value, Value, bool]:
    """Bring two operands of an elementwise op into one layout; returns (a, b, result_is_nhwc)."""
    if not (a.nhwc or b.nhwc):
        return a, b, False

    def to_nhwc(v: Value) -> Value:
        if v.nhwc:
            return v
        if v.is_const:
            return Value(const_to_nhwc_broadcast(v.data), nhwc=True)
        if v.rank < 4:   # ONNX broadcasting aligns trailing axes: pad the rank on the left
            v = Value(tf.reshape(v.data, [1] * (4 - v.rank) + list(v.data.shape)))
        return as_nhwc(v)

    return to_nhwc(a), to_nhwc(b), True


def binary(np_fn, tf_fn):
    def handler(ctx, inputs):
        a, b = inputs[0], inputs[1]
        if a.is_const and b.is_const:
            return [Value(np.asarray(np_fn(a.data, b.data)))]
        a, b, nhwc = align_for_broadcast(a, b)
        dtype = (b.data.dtype if a.is_const else a.data.dtype)
        np_dtype = dtype.as_numpy_dtype if hasattr(dtype, "as_numpy_dtype") else dtype
        return [Value(tf_fn(as_tensor(a, np_dtype), as_tensor(b, np_dtype)), nhwc=nhwc)]
    return handler


def unary(tf_fn):
    def handler(ctx, inputs):
        x = inputs[0]
        return [Value(tf_fn(as_tensor(x)), nhwc=x.nhwc)]
    return handler


def spatial_padding(ctx, x_nhwc, kernel, strides, dilations):
    """Resolve ONNX pads/auto_pad to a TF padding mode, padding explicitly only when needed."""
    in_hw = [int(d) for d in x_nhwc.shape[1:3]]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = tf_same_pads(in_hw, kernel, strides, dilations)
        if auto_pad == "SAME_LOWER":
            pads = [pads[2], pads[3], pads[0], pads[1]]
    elif auto_pad == "VALID":
        pads = [0, 0, 0, 0]
    else:
        pads = list(ctx.attr("pads", [0, 0, 0, 0]))
    mode = conv_padding_mode(pads, in_hw, kernel, strides, dilations)
    return mode, pads


# ---------------------------------------------------------------- convolution

def convert_conv(ctx, inputs):
    weight = require_const(ctx, inputs[1], "Conv weight")
    bias = optional_const(ctx, inputs, 2, "Conv bias")
    if weight.ndim != 4:
        raise ctx.fail(f"only 2-D convolutions are supported (weight rank {weight.ndim})")
    x = as_nhwc(inputs[0]).data
    kernel = list(weight.shape[2:])
    strides = list(ctx.attr("strides", [1, 1]))
    dilations = list(ctx.attr("dilations", [1, 1]))
    group = int(ctx.attr("group", 1))
    in_channels = int(x.shape[3])
    out_channels = weight.shape[0]

    mode, pads = spatial_padding(ctx, x, kernel, strides, dilations)
    if mode is None:
        # Pads TF's SAME/VALID cannot express (e.g. PyTorch's symmetric pad at stride 2): one PAD op.
        top, left, bottom, right = pads
        x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
        mode = "VALID"

    nhwc_strides = [1, strides[0], strides[1], 1]
    nhwc_dilations = [1, dilations[0], dilations[1], 1]
    if group == 1:
        filt = np.transpose(weight, (2, 3, 1, 0))                      # OIHW -> HWIO
        y = tf.raw_ops.Conv2D(input=x, filter=filt, strides=nhwc_strides, padding=mode,
                              dilations=nhwc_dilations)
    elif group == in_channels and weight.shape[1] == 1 and strides[0] == strides[1]:
        multiplier = out_channels // in_channels
        filt = weight.reshape(in_channels, multiplier, *kernel).transpose(2, 3, 0, 1)  # -> H,W,C,M
        y = tf.raw_ops.DepthwiseConv2dNative(input=x, filter=filt, strides=nhwc_strides, padding=mode,
                                             dilations=nhwc_dilations)
    else:
        # Grouped conv: a filter whose input depth is C/groups makes TF (and TFLite's CONV_2D)
        # a grouped convolution — one op, not split + convs + concat.
        filt = np.transpose(weight, (2, 3, 1, 0))
        y = tf.raw_ops.Conv2D(input=x, filter=filt, strides=nhwc_strides, padding=mode,
                              dilations=nhwc_dilations)
    if bias is not None:
        y = tf.nn.bias_add(y, bias.astype(np.float32))
    return [Value(y, nhwc=True)]


def convert_batchnorm(ctx, inputs):
    x = inputs[0]
    scale, offset, mean, var = (require_const(ctx, v, "BatchNormalization parameter") for v in inputs[1:5])
    eps = float(ctx.attr("epsilon", 1e-5))
    multiplier = (scale / np.sqrt(var + eps)).astype(np.float32)
    shift = (offset - mean * multiplier).astype(np.float32)
    trailing = max(x.rank - 2, 0)
    shape = (-1,) + (1,) * trailing     # channel axis 1 of an NC... tensor
    scaled = binary(np.multiply, tf.multiply)(ctx, [x, Value(multiplier.reshape(shape))])[0]
    return binary(np.add, tf.add)(ctx, [scaled, Value(shift.reshape(shape))])


def convert_instance_norm(ctx, inputs):
    """y = scale * (x - mean) / sqrt(var + epsilon) + B, statistics per sample and channel over the
    spatial axes. torch exports GroupNorm as Reshape(N, G, -1) -> this (3-D) -> Reshape back."""
    x = inputs[0]
    scale = require_const(ctx, inputs[1], "InstanceNormalization scale").astype(np.float32)
    bias = require_const(ctx, inputs[2], "InstanceNormalization B").astype(np.float32)
    epsilon = float(ctx.attr("epsilon", 1e-5))
    if x.nhwc:
        axes, channel_shape = [1, 2], [1, 1, 1, -1]
    else:
        axes, channel_shape = list(range(2, x.rank)), [1, -1] + [1] * (x.rank - 2)
    t = as_tensor(x)
    mean, variance = tf.nn.moments(t, axes=axes, keepdims=True)
    out = (t - mean) * tf.math.rsqrt(variance + epsilon) * scale.reshape(channel_shape) + bias.reshape(channel_shape)
    return [Value(out, nhwc=x.nhwc)]


def pool(tf_pool):
    def handler(ctx, inputs):
        x = as_nhwc(inputs[0]).data
        kernel = list(ctx.attr("kernel_shape"))
        strides = list(ctx.attr("strides", [1, 1]))
        mode, pads = spatial_padding(ctx, x, kernel, strides, [1, 1])
        if mode is None:
            raise ctx.fail(f"pads {pads} are neither SAME nor VALID; pad the input with a Pad node")
        if mode == "SAME" and tf_pool is tf.nn.avg_pool2d and ctx.attr("count_include_pad", 0):
            raise ctx.fail("count_include_pad=1 with padding is not supported")
        if ctx.attr("ceil_mode", 0):
            raise ctx.fail("ceil_mode=1 is not supported; export with ceil_mode=False")
        return [Value(tf_pool(x, kernel, strides, mode), nhwc=True)]
    return handler


def convert_global_average_pool(ctx, inputs):
    x = as_nhwc(inputs[0])
    return [Value(tf.reduce_mean(x.data, axis=[1, 2], keepdims=True), nhwc=True)]


def convert_reduce_mean(ctx, inputs):
    x = inputs[0]
    axes = ctx.attr("axes")
    if axes is None:
        axes = optional_const(ctx, inputs, 1, "ReduceMean axes")
    keepdims = bool(ctx.attr("keepdims", 1))
    if axes is None or len(axes) == 0:
        axes = list(range(x.rank))
    axes = sorted(int(a) % x.rank for a in axes)
    if x.is_const:
        return [Value(np.mean(x.data, axis=tuple(axes), keepdims=keepdims))]
    if x.nhwc:
        tf_axes = sorted(nhwc_axis(a) for a in axes)
        kept_logical = [a for a in range(4) if a not in axes]
        kept_nhwc = [NCHW_TO_NHWC[a] for a in range(4) if a not in tf_axes]
        if keepdims or kept_logical == kept_nhwc:
            out = tf.reduce_mean(x.data, axis=tf_axes, keepdims=keepdims)
            return [Value(out, nhwc=keepdims)]
        x = as_logical(x)
    return [Value(tf.reduce_mean(x.data, axis=axes, keepdims=keepdims))]


# ---------------------------------------------------------------- activations

def convert_clip(ctx, inputs):
    x = inputs[0]
    low = optional_const(ctx, inputs, 1, "Clip min", ctx.attr("min"))
    high = optional_const(ctx, inputs, 2, "Clip max", ctx.attr("max"))
    low = -np.inf if low is None else float(low)
    high = np.inf if high is None else float(high)
    if x.is_const:
        return [Value(np.clip(x.data, low, high).astype(x.data.dtype))]
    t = as_tensor(x)
    if low == 0 and high == 6:
        out = tf.nn.relu6(t)
    elif low == 0 and high == np.inf:
        out = tf.nn.relu(t)
    else:
        out = t
        if high != np.inf:
            out = tf.minimum(out, high)
        if low != -np.inf:
            out = tf.maximum(out, low)
    return [Value(out, nhwc=x.nhwc)]


def convert_hard_sigmoid(ctx, inputs):
    x = inputs[0]
    alpha = float(ctx.attr("alpha", 0.2))
    beta = float(ctx.attr("beta", 0.5))
    t = as_tensor(x)
    if np.isclose(alpha, 1 / 6) and np.isclose(beta, 0.5):
        out = tf.nn.relu6(t + 3.0) * (1.0 / 6.0)
    else:
        out = tf.clip_by_value(alpha * t + beta, 0.0, 1.0)
    return [Value(out, nhwc=x.nhwc)]


def convert_hard_swish(ctx, inputs):
    x = inputs[0]
    t = as_tensor(x)
    # the exact pattern TFLite's optimizer fuses into one HARD_SWISH op
    return [Value(t * tf.nn.relu6(t + 3.0) * (1.0 / 6.0), nhwc=x.nhwc)]


def convert_leaky_relu(ctx, inputs):
    x = inputs[0]
    return [Value(tf.nn.leaky_relu(as_tensor(x), alpha=float(ctx.attr("alpha", 0.01))), nhwc=x.nhwc)]


def convert_softmax(ctx, inputs):
    x = inputs[0]
    axis = int(ctx.attr("axis", -1 if ctx.opset >= 13 else 1))
    if x.nhwc:
        axis = nhwc_axis(axis)
    return [Value(tf.nn.softmax(as_tensor(x), axis=axis), nhwc=x.nhwc)]


# ---------------------------------------------------------------- matrix products

def convert_gemm(ctx, inputs):
    a = as_logical(inputs[0])
    b = inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    alpha = float(ctx.attr("alpha", 1.0))
    beta = float(ctx.attr("beta", 1.0))
    a_t = as_tensor(a)
    if ctx.attr("transA", 0):
        a_t = tf.transpose(a_t)
    if b.is_const:
        weight = b.data.T if ctx.attr("transB", 0) else b.data
        y = tf.matmul(a_t, (alpha * weight).astype(np.float32))     # -> FULLY_CONNECTED
    else:
        y = alpha * tf.matmul(a_t, b.data, transpose_b=bool(ctx.attr("transB", 0)))
    if c is not None:
        y = y + (as_tensor(c) * beta if not c.is_const else (beta * c.data).astype(np.float32))
    return [Value(y)]


def convert_matmul(ctx, inputs):
    a, b = as_logical(inputs[0]), as_logical(inputs[1])
    return [Value(tf.matmul(as_tensor(a), as_tensor(b)))]


# ---------------------------------------------------------------- shape and data movement

def convert_flatten(ctx, inputs):
    x = inputs[0]
    axis = int(ctx.attr("axis", 1)) % max(x.rank, 1)
    shape = x.logical_shape()
    new_shape = [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
    if x.is_const:
        return [Value(x.data.reshape(new_shape))]
    return [Value(tf.reshape(as_logical(x).data, new_shape))]


def convert_reshape(ctx, inputs):
    x = inputs[0]
    target = [int(d) for d in require_const(ctx, inputs[1], "Reshape shape")]
    shape = x.logical_shape()
    if not ctx.attr("allowzero", 0):
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
    if x.is_const:
        return [Value(x.data.reshape(target))]
    return [Value(tf.reshape(as_logical(x).data, target))]


def axes_from(ctx, inputs, what):
    axes = ctx.attr("axes")
    if axes is None:
        axes = optional_const(ctx, inputs, 1, what)
    return None if axes is None else [int(a) for a in axes]


def convert_squeeze(ctx, inputs):
    x = inputs[0]
    shape = x.logical_shape()
    axes = axes_from(ctx, inputs, "Squeeze axes")
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else [a % len(shape) for a in axes]
    new_shape = [d for i, d in enumerate(shape) if i not in axes]
    if x.is_const:
        return [Value(x.data.reshape(new_shape))]
    return [Value(tf.reshape(as_logical(x).data, new_shape))]


def convert_unsqueeze(ctx, inputs):
    x = inputs[0]
    shape = x.logical_shape()
    axes = axes_from(ctx, inputs, "Unsqueeze axes")
    out_rank = len(shape) + len(axes)
    new_shape = list(shape)
    for a in sorted(a % out_rank for a in axes):
        new_shape.insert(a, 1)
    if x.is_const:
        return [Value(x.data.reshape(new_shape))]
    return [Value(tf.reshape(as_logical(x).data, new_shape))]


def convert_transpose(ctx, inputs):
    x = inputs[0]
    perm = ctx.attr("perm") or list(reversed(range(x.rank)))
    if x.is_const:
        return [Value(np.transpose(x.data, perm))]
    return [Value(tf.transpose(as_logical(x).data, perm))]


def convert_split(ctx, inputs):
    x = inputs[0]
    axis = int(ctx.attr("axis", 0)) % x.rank
    dim = x.logical_shape()[axis]
    sizes = optional_const(ctx, inputs, 1, "Split sizes", ctx.attr("split"))
    count = len(ctx.node.output)
    if sizes is None:
        # equal split; opset 18's num_outputs puts the remainder in the last chunk
        chunk = -(-dim // count)
        sizes = [chunk] * (count - 1) + [dim - chunk * (count - 1)]
    sizes = [int(s) for s in sizes]
    tf_axis = nhwc_axis(axis) if x.nhwc else axis
    if x.is_const:
        return [Value(p) for p in np.split(x.data, np.cumsum(sizes)[:-1], axis=axis)]
    # one SPLIT (equal parts) or SPLIT_V op for all channel groups, never per-group slices
    parts = tf.split(x.data, count if len(set(sizes)) == 1 else sizes, axis=tf_axis)
    return [Value(p, nhwc=x.nhwc) for p in parts]


def convert_slice(ctx, inputs):
    x = inputs[0]
    starts = require_const(ctx, inputs[1], "Slice starts")
    ends = require_const(ctx, inputs[2], "Slice ends")
    axes = optional_const(ctx, inputs, 3, "Slice axes", list(range(len(starts))))
    steps = optional_const(ctx, inputs, 4, "Slice steps", [1] * len(starts))
    shape = x.logical_shape()
    slices = [slice(None)] * len(shape)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = int(axis) % len(shape)
        slices[axis] = clamp_slice(int(start), int(end), int(step), shape[axis])
    if x.is_const:
        return [Value(x.data[tuple(slices)])]
    if x.nhwc:
        slices = [slices[i] for i in NCHW_TO_NHWC]
    return [Value(x.data[tuple(slices)], nhwc=x.nhwc)]


def clamp_slice(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX uses INT64 extremes for 'to the end'; Python slices want None there."""
    if step > 0:
        return slice(max(min(start, dim), -dim), None if end >= dim else max(end, -dim), step)
    return slice(min(start, dim - 1) if start < dim else None, None if end < -dim else end, step)


def convert_concat(ctx, inputs):
    axis = int(ctx.attr("axis"))
    rank = inputs[0].rank
    axis %= rank
    if all(v.is_const for v in inputs):
        return [Value(np.concatenate([v.data for v in inputs], axis=axis))]
    if rank == 4 and any(v.nhwc for v in inputs):
        parts = [as_nhwc(v) for v in inputs]
        return [Value(tf.concat([as_tensor(v) for v in parts], axis=nhwc_axis(axis)), nhwc=True)]
    return [Value(tf.concat([as_tensor(as_logical(v)) for v in inputs], axis=axis))]


def convert_pad(ctx, inputs):
    x = inputs[0]
    mode = ctx.attr("mode", "constant")
    pads = optional_const(ctx, inputs, 1, "Pad pads", ctx.attr("pads"))
    value = optional_const(ctx, inputs, 2, "Pad constant_value", ctx.attr("value", 0.0))
    axes = optional_const(ctx, inputs, 3, "Pad axes")
    rank = x.rank
    pads = [int(p) for p in pads]
    half = len(pads) // 2
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    pairs = [[0, 0] for _ in range(rank)]
    for k, axis in enumerate(axes[:half]):
        pairs[axis] = [pads[k], pads[k + half]]
    if x.nhwc:
        pairs = [pairs[i] for i in NCHW_TO_NHWC]
    tf_mode = {"constant": "CONSTANT", "reflect": "REFLECT"}.get(mode)
    if tf_mode is None:
        raise ctx.fail(f"Pad mode '{mode}' has no TFLite equivalent; use constant or reflect padding")
    value = float(np.asarray(value if value is not None else 0.0).reshape(-1)[0]) if np.size(value) else 0.0
    return [Value(tf.pad(as_tensor(x), pairs, mode=tf_mode, constant_values=value), nhwc=x.nhwc)]


def convert_constant(ctx, inputs):
    from onnx import numpy_helper

    for attr in ctx.node.attribute:
        if attr.name == "value":
            return [Value(numpy_helper.to_array(attr.t))]
        if attr.name in ("value_float", "value_int"):
            return [Value(np.asarray(ctx.attr(attr.name)))]
        if attr.name in ("value_floats", "value_ints"):
            return [Value(np.asarray(ctx.attr(attr.name)))]
    raise ctx.fail("Constant without a tensor/number value")


def convert_identity(ctx, inputs):
    return [inputs[0]]


# ---------------------------------------------------------------- shape arithmetic (folded at conversion time)
# Unsimplified exports (e.g. timm's TF-"same" padding) compute pads from Shape at run time. Every
# shape here is static, so these ops fold to numpy constants and the Pad they feed becomes a PAD.

def convert_shape(ctx, inputs):
    shape = np.asarray(inputs[0].logical_shape(), np.int64)
    start, end = ctx.attr("start", 0), ctx.attr("end")
    return [Value(shape[start:end])]


def convert_gather(ctx, inputs):
    data = require_const(ctx, inputs[0], "Gather data")
    indices = require_const(ctx, inputs[1], "Gather indices")
    return [Value(np.take(data, indices, axis=int(ctx.attr("axis", 0))))]


def convert_cast(ctx, inputs):
    import onnx

    dtype = onnx.helper.tensor_dtype_to_np_dtype(int(ctx.attr("to")))
    x = inputs[0]
    if x.is_const:
        return [Value(x.data.astype(dtype))]
    return [Value(tf.cast(x.data, tf.as_dtype(dtype)), nhwc=x.nhwc)]


def convert_constant_of_shape(ctx, inputs):
    from onnx import numpy_helper

    shape = require_const(ctx, inputs[0], "ConstantOfShape shape")
    value = ctx.node.attribute[0].t if ctx.node.attribute else None
    fill = numpy_helper.to_array(value) if value is not None else np.zeros(1, np.float32)
    return [Value(np.full([int(d) for d in shape], fill.reshape(-1)[0], dtype=fill.dtype))]


def onnx_divide(a, b):
    """ONNX Div truncates integer division toward zero (numpy's // floors)."""
    a, b = np.asarray(a), np.asarray(b)
    if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
        return np.trunc(a / b).astype(np.result_type(a, b))
    return a / b


def variadic(np_fn, tf_fn):
    """Max/Min take any number of inputs: fold them pairwise."""
    pairwise = binary(np_fn, tf_fn)

    def handler(ctx, inputs):
        result = inputs[0]
        for other in inputs[1:]:
            result = pairwise(ctx, [result, other])[0]
        return [result]
    return handler


def elementwise_unary(np_fn, tf_fn):
    """A unary op folded in numpy on constants (shape arithmetic), else the TF op."""
    def handler(ctx, inputs):
        x = inputs[0]
        if x.is_const:
            return [Value(np.asarray(np_fn(x.data)).astype(x.data.dtype))]
        return [Value(tf_fn(x.data), nhwc=x.nhwc)]
    return handler


OP_HANDLERS = {
    "Conv": convert_conv,
    "BatchNormalization": convert_batchnorm,
    "InstanceNormalization": convert_instance_norm,
    "Relu": unary(tf.nn.relu),
    "Sigmoid": unary(tf.math.sigmoid),
    "Tanh": unary(tf.math.tanh),
    "LeakyRelu": convert_leaky_relu,
    "Clip": convert_clip,
    "HardSigmoid": convert_hard_sigmoid,
    "HardSwish": convert_hard_swish,
    "Softmax": convert_softmax,
    "Add": binary(np.add, tf.add),
    "Sub": binary(np.subtract, tf.subtract),
    "Mul": binary(np.multiply, tf.multiply),
    "Div": binary(onnx_divide, tf.divide),
    "Neg": elementwise_unary(np.negative, tf.negative),
    "Ceil": elementwise_unary(np.ceil, tf.math.ceil),
    "Floor": elementwise_unary(np.floor, tf.math.floor),
    "Abs": elementwise_unary(np.abs, tf.math.abs),
    "Sqrt": elementwise_unary(np.sqrt, tf.math.sqrt),
    "Max": variadic(np.maximum, tf.maximum),
    "Min": variadic(np.minimum, tf.minimum),
    "Shape": convert_shape,
    "Gather": convert_gather,
    "Cast": convert_cast,
    "ConstantOfShape": convert_constant_of_shape,
    "ReduceMean": convert_reduce_mean,
    "GlobalAveragePool": convert_global_average_pool,
    "MaxPool": pool(tf.nn.max_pool2d),
    "AveragePool": pool(tf.nn.avg_pool2d),
    "Gemm": convert_gemm,
    "MatMul": convert_matmul,
    "Flatten": convert_flatten,
    "Reshape": convert_reshape,
    "Squeeze": convert_squeeze,
    "Unsqueeze": convert_unsqueeze,
    "Transpose": convert_transpose,
    "Split": convert_split,
    "Slice": convert_slice,
    "Concat": convert_concat,
    "Pad": convert_pad,
    "Constant": convert_constant,
    "Identity": convert_identity,
    "Dropout": convert_identity,
}
