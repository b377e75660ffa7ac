"""Single-op graphs built with onnx.helper: each converted op equals onnxruntime, as the right TFLite op."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from mixdeploy.tflite.convert import convert_onnx
from convert_support import WORKDIR, conv_model, graph, ort_run, relative_error, tflite_run

RNG = np.random.default_rng(1)


def check(model, name, in_shape):
    out = WORKDIR / f"op_{name}.tflite"
    result = convert_onnx(model, out)
    x = RNG.standard_normal((2, *in_shape[1:])).astype(np.float32) * 3
    error = relative_error(tflite_run(out, x), ort_run(model, x))
    assert error < 1e-5, f"{name}: relative error {error:.2e}"
    return result.op_histogram


def test_grouped_conv_is_one_conv2d():
    hist = check(conv_model(group=2, cin=8, cout=12, k=1, pads=[0, 0, 0, 0]), "grouped", [1, 8, 12, 12])
    assert hist == {"CONV_2D": 1}


def test_grouped_3x3_conv_is_one_conv2d():
    hist = check(conv_model(group=4, cin=8, cout=8, k=3), "grouped3", [1, 8, 12, 12])
    assert hist == {"CONV_2D": 1}


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_conv(multiplier):
    hist = check(conv_model(group=6, cin=6, cout=6 * multiplier, k=5), f"dw{multiplier}", [1, 6, 12, 12])
    assert hist == {"DEPTHWISE_CONV_2D": 1}


def test_stride2_tf_same_pads_need_no_pad():
    # TF SAME at stride 2 on an even size: nothing on top/left, one on bottom/right
    hist = check(conv_model(group=1, cin=3, cout=4, k=3, stride=2, pads=[0, 0, 1, 1]), "same", [1, 3, 12, 12])
    assert hist == {"CONV_2D": 1}


def test_symmetric_stride2_pads_become_one_pad():
    hist = check(conv_model(group=1, cin=3, cout=4, k=3, stride=2), "sym2", [1, 3, 12, 12])
    assert hist == {"PAD": 1, "CONV_2D": 1}


def test_dilated_conv():
    hist = check(conv_model(group=1, cin=3, cout=4, k=3, dilation=2, pads=[2, 2, 2, 2]), "dil", [1, 3, 12, 12])
    assert "CONV_2D" in hist and "TRANSPOSE" not in hist


def elementwise(nodes, inits=(), shape=(1, 4, 6, 6), out_shape=None, name="elt"):
    return check(graph(nodes, list(shape), out_shape, inits), name, list(shape))


def test_clip_0_6_is_relu6():
    inits = [("lo", np.float32(0)), ("hi", np.float32(6))]
    assert elementwise([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], inits, name="relu6") == {"RELU6": 1}


def test_hard_swish_is_one_op():
    assert elementwise([helper.make_node("HardSwish", ["x"], ["y"])], name="hswish") == {"HARD_SWISH": 1}


def test_hard_sigmoid():
    elementwise([helper.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6, beta=0.5)], name="hsig")
    elementwise([helper.make_node("HardSigmoid", ["x"], ["y"])], name="hsig_default")


def test_batchnorm_and_per_channel_broadcast():
    c = 4
    inits = [("s", RNG.random(c, np.float32) + 0.5), ("b", RNG.standard_normal(c).astype(np.float32)),
             ("m", RNG.standard_normal(c).astype(np.float32)), ("v", RNG.random(c, np.float32) + 0.1),
             ("k", RNG.standard_normal((c, 1, 1)).astype(np.float32))]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
             helper.make_node("Mul", ["bn", "k"], ["y"])]
    hist = elementwise(nodes, inits, name="bn")
    assert "TRANSPOSE" not in hist


def test_squeeze_excite_gate():
    # x * sigmoid(mean over H,W) — the SE pattern, with Mul broadcasting (N,C,1,1) over (N,C,H,W)
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Sigmoid", ["m"], ["g"]),
             helper.make_node("Mul", ["x", "g"], ["y"])]
    assert elementwise(nodes, name="se") == {"MEAN": 1, "LOGISTIC": 1, "MUL": 1}


def test_split_slice_concat_on_channels():
    inits = [("sizes", np.array([1, 3], np.int64)), ("st", np.array([1], np.int64)),
             ("en", np.array([3], np.int64)), ("ax", np.array([1], np.int64))]
    nodes = [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
             helper.make_node("Slice", ["b", "st", "en", "ax"], ["bs"]),
             helper.make_node("Concat", ["bs", "a"], ["y"], axis=1)]
    hist = elementwise(nodes, inits, out_shape=[1, 3, 6, 6], name="split")
    assert hist.get("SPLIT_V") == 1 and hist.get("CONCATENATION") == 1 and "TRANSPOSE" not in hist


def test_spatial_slice_and_pad():
    inits = [("st", np.array([1, 2], np.int64)), ("en", np.array([5, 6], np.int64)),
             ("ax", np.array([2, 3], np.int64)), ("p", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
             helper.make_node("Pad", ["s", "p"], ["y"], mode="constant")]
    hist = elementwise(nodes, inits, out_shape=None, name="slicepad")
    assert "TRANSPOSE" not in hist


def test_classifier_head():
    w = RNG.standard_normal((5, 4)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    hist = elementwise(nodes, [("w", w), ("b", b)], out_shape=[1, 5], name="head")
    assert hist.get("FULLY_CONNECTED") == 1 and "TRANSPOSE" not in hist


def test_reshape_squeeze_unsqueeze_after_pooling():
    inits = [("ax", np.array([2, 3], np.int64)), ("ax0", np.array([1], np.int64)),
             ("shape", np.array([1, -1], np.int64))]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
             helper.make_node("Squeeze", ["m", "ax"], ["s"]),
             helper.make_node("Unsqueeze", ["s", "ax0"], ["u"]),
             helper.make_node("Reshape", ["u", "shape"], ["y"])]
    hist = elementwise(nodes, inits, out_shape=[1, 4], name="reshape")
    assert "TRANSPOSE" not in hist


def test_max_pool():
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    assert elementwise([node], name="maxpool") == {"MAX_POOL_2D": 1}


def test_variadic_max_and_rounding_ops():
    inits = [("a", RNG.standard_normal((4, 1, 1)).astype(np.float32)), ("b", np.float32(0.5))]
    nodes = [helper.make_node("Max", ["x", "a", "b"], ["m"]),
             helper.make_node("Floor", ["m"], ["f"]),
             helper.make_node("Neg", ["f"], ["y"])]
    hist = elementwise(nodes, inits, name="max3")
    assert "TRANSPOSE" not in hist
