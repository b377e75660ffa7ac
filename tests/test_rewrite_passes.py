"""Each rewrite pass alone, on small hand-built graphs, against onnxruntime on the original."""

from __future__ import annotations


import numpy as np
import pytest
from onnx import helper

from mixdeploy.onnx.rewrite import rewrite
from rewrite_helpers import GraphBuilder, assert_same_function, chelsea, ops, random_input


def inputs_for(model, seeds=(0, 1)):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return [random_input(shape, s) for s in seeds]


def run_pass(model, name, lowering="split"):
    return rewrite(model, lowering=lowering, passes=[name])


# ------------------------------------------------------------------ fold_pad

def pad_then_conv(pads, mode="constant", value=None, k=3, stride=2):
    g = GraphBuilder(channels=4, hw=11)
    pad_inputs = ["x", g.const(np.array(pads, np.int64), "pads")]
    if value is not None:
        pad_inputs.append(g.const(np.array(value, np.float32), "v"))
    padded = g.node("Pad", pad_inputs, mode=mode)
    return g.model(g.conv(padded, 4, 8, k, stride=stride, pads=[0, 0, 0, 0]))


def test_fold_pad_absorbs_asymmetric_zero_pad():
    model = pad_then_conv([0, 0, 0, 1, 0, 0, 2, 1])  # TF-'same' style: more at the end
    out = run_pass(model, "fold_pad")
    assert "Pad" not in ops(out.model)
    conv = next(n for n in out.model.graph.node if n.op_type == "Conv")
    assert list(helper.get_attribute_value(next(a for a in conv.attribute if a.name == "pads"))) == [0, 1, 2, 1]
    assert_same_function(model, out.model, inputs_for(model))


@pytest.mark.parametrize("pads, mode, value", [
    ([0, 0, 1, 1, 0, 0, 1, 1], "reflect", None),      # not zeros
    ([0, 0, 1, 1, 0, 0, 1, 1], "constant", 0.5),      # non-zero constant
    ([1, 0, 1, 1, 0, 0, 1, 1], "constant", None),     # pads the batch dim
])
def test_fold_pad_leaves_pads_a_conv_cannot_absorb(pads, mode, value):
    model = pad_then_conv(pads, mode, value)
    out = run_pass(model, "fold_pad")
    assert "Pad" in ops(out.model)
    assert out.report.passes[0].touched == []
    assert_same_function(model, out.model, inputs_for(model))


# ------------------------------------------------------------------ fold_batchnorm

def test_fold_batchnorm_plain_and_grouped_conv():
    g = GraphBuilder(channels=8)
    y = g.batchnorm(g.conv("x", 8, 16, 3), 16)
    y = g.batchnorm(g.conv(y, 16, 16, 1, group=4, bias=False), 16)  # grouped, no bias yet
    model = g.model(y)
    out = run_pass(model, "fold_batchnorm")
    assert "BatchNormalization" not in ops(out.model)
    assert_same_function(model, out.model, inputs_for(model))


def test_fold_batchnorm_across_mixconv_concat():
    g = GraphBuilder(channels=12)
    y = g.mixconv("x", [6, 3, 3], [3, 5, 7])
    model = g.model(g.batchnorm(y, 12))
    out = run_pass(model, "fold_batchnorm")
    assert ops(out.model).count("BatchNormalization") == 0
    assert ops(out.model).count("Conv") == 3
    assert_same_function(model, out.model, inputs_for(model))


def test_fold_batchnorm_keeps_bn_it_cannot_fold():
    g = GraphBuilder(channels=8)
    conv = g.conv("x", 8, 8, 3)
    y = g.node("Add", [g.batchnorm(conv, 8), conv])  # the conv output is used twice
    model = g.model(y)
    out = run_pass(model, "fold_batchnorm")
    assert "BatchNormalization" in ops(out.model)
    assert out.report.passes[0].details["left_unfolded"]
    assert_same_function(model, out.model, inputs_for(model))


# ------------------------------------------------------------------ recognize_mixconv

def test_recognize_mixconv_reports_the_groups():
    g = GraphBuilder(channels=16)
    model = g.model(g.mixconv("x", [7, 3, 3, 3], [3, 5, 7, 9], stride=2))
    out = run_pass(model, "recognize_mixconv")
    layers = out.report.mixconvs
    assert len(layers) == 1
    assert layers[0]["channels"] == [7, 3, 3, 3]
    assert [k[0] for k in layers[0]["kernels"]] == [3, 5, 7, 9]
    assert layers[0]["strides"] == [2, 2]
    assert out.report.passes[0].touched == [layers[0]["name"]]
    assert ops(out.model) == ops(model)      # recognizing changes nothing in the graph


def slice_op(g, x, start, stop):
    return g.node("Slice", [x, g.const(np.array([start], np.int64), "s"), g.const(np.array([stop], np.int64), "e"),
                            g.const(np.array([1], np.int64), "a")])


def mixconv_from_slices(nested: bool):
    """A MixConv whose channel split is Slice ops: fan-out [0:6],[6:9],[9:12], or a nested chain."""
    g = GraphBuilder(channels=12)
    if nested:
        rest = slice_op(g, "x", 6, 2**62)           # x[:, 6:]
        parts = [slice_op(g, "x", 0, 6), slice_op(g, rest, 0, 3), slice_op(g, rest, -3, 2**62)]
    else:
        parts = [slice_op(g, "x", 9, 12), slice_op(g, "x", 0, 6), slice_op(g, "x", 6, 9)]  # any order
    sizes = {True: [6, 3, 3], False: [3, 6, 3]}[nested]
    kernels = {True: [3, 5, 7], False: [7, 3, 5]}[nested]
    outs = [g.conv(p, c, c, k, group=c) for p, c, k in zip(parts, sizes, kernels)]
    return g.model(g.node("Concat", outs if nested else [outs[1], outs[2], outs[0]], axis=1))


@pytest.mark.parametrize("nested", [False, True])
def test_slices_to_split_normalizes_slice_chains_so_the_mixconv_is_recognized(nested):
    model = mixconv_from_slices(nested)
    assert run_pass(model, "recognize_mixconv").report.mixconvs == []    # Slices alone: no MixConv
    out = rewrite(model, passes=["slices_to_split", "recognize_mixconv"])
    assert "Slice" not in ops(out.model) and ops(out.model).count("Split") == 1
    assert len(out.report.passes[0].touched) == 1
    layers = out.report.mixconvs
    assert len(layers) == 1 and layers[0]["channels"] == [6, 3, 3]
    assert_same_function(model, out.model, inputs_for(model))


def test_recognize_mixconv_ignores_a_plain_depthwise_network():
    g = GraphBuilder(channels=8)
    y = g.conv(g.conv("x", 8, 8, 3, group=8), 8, 16, 1)
    model = g.model(y)
    out = run_pass(model, "recognize_mixconv")
    assert out.report.mixconvs == []
    assert ops(out.model) == ops(model)


# ------------------------------------------------------------------ fuse_grouped_pointwise

@pytest.mark.parametrize("bias", [True, False])
def test_fuse_grouped_pointwise(bias):
    g = GraphBuilder(channels=8)
    a, b = g.split("x", [4, 4])
    y = g.node("Concat", [g.conv(a, 4, 6, 1, bias=bias), g.conv(b, 4, 6, 1, bias=False)], axis=1)
    model = g.model(y)
    out = run_pass(model, "fuse_grouped_pointwise")
    assert ops(out.model) == ["Conv"]
    conv = out.model.graph.node[0]
    assert helper.get_attribute_value(next(a for a in conv.attribute if a.name == "group")) == 2
    assert_same_function(model, out.model, inputs_for(model))


def test_fuse_grouped_pointwise_skips_unequal_split_and_depthwise():
    g = GraphBuilder(channels=8)
    a, b = g.split("x", [5, 3])
    y = g.node("Concat", [g.conv(a, 5, 6, 1), g.conv(b, 3, 6, 1)], axis=1)
    y = g.mixconv(y, [6, 6], [3, 5])
    model = g.model(y)
    out = run_pass(model, "fuse_grouped_pointwise")
    assert ops(out.model) == ops(model)


# ------------------------------------------------------------------ lowerings on one MixConv

MIXCONV_CASES = {
    # channels, kernels, stride, pads per group (None: symmetric k//2)
    "s1_3579": ([8, 4, 2, 2], [3, 5, 7, 9], 1, None),
    "s2_tf_same": ([4, 4, 4], [3, 5, 7], 2, [[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]]),
    "s2_k11": ([4, 4, 4, 4, 4], [3, 5, 7, 9, 11], 2, None),
}


@pytest.mark.parametrize("lowering", ["split", "pad", "decompose", "pad_decompose"])
@pytest.mark.parametrize("case", sorted(MIXCONV_CASES))
def test_lowering_of_one_mixconv_is_exact(case, lowering):
    sizes, kernels, stride, pads = MIXCONV_CASES[case]
    g = GraphBuilder(channels=sum(sizes), hw=13)
    model = g.model(g.mixconv("x", sizes, kernels, stride=stride, pads=pads))
    out = rewrite(model, lowering=lowering, passes=["lower_mixconv"])
    layer = out.report.passes[0].details["layers"][0]
    assert layer["applied"] == lowering
    if lowering == "split":
        assert ops(out.model) == ops(model)
    if lowering in ("pad", "pad_decompose"):
        assert "Split" not in ops(out.model) and "Concat" not in ops(out.model)
        big = max(kernels) ** 2
        expected_extra = sum(c * (big - k * k) for c, k in zip(sizes, kernels))
        t, _, b, _ = pads[0] if pads else [kernels[0] // 2] * 4
        out_hw = (13 + t + b - kernels[0]) // stride + 1
        assert layer["extra_macs"] == expected_extra * out_hw * out_hw
    if lowering in ("decompose", "pad_decompose"):
        for conv in (n for n in out.model.graph.node if n.op_type == "Conv"):
            shape = helper.get_attribute_value(next(a for a in conv.attribute if a.name == "kernel_shape"))
            assert shape[0] * shape[1] <= 25  # every piece on XNNPACK's fast depthwise path
    photo = np.tile(chelsea(13), (1, sum(sizes), 1, 1))[:, :sum(sizes)]  # real image statistics
    assert_same_function(model, out.model, inputs_for(model) + [photo])


def test_pad_lowering_falls_back_when_groups_do_not_share_a_center():
    g = GraphBuilder(channels=8, hw=12)
    model = g.model(g.mixconv("x", [4, 4], [3, 5], pads=[[0, 0, 2, 2], [2, 2, 2, 2]]))
    out = rewrite(model, lowering="pad", passes=["lower_mixconv"])
    assert out.report.passes[0].details["layers"][0]["applied"] == "split"
    assert_same_function(model, out.model, inputs_for(model))


def test_rewrite_rejects_unknown_pass_and_lowering():
    from mixdeploy.errors import MixdeployError

    model = mixconv_from_slices(False)
    with pytest.raises(MixdeployError, match="unknown rewrite pass"):
        rewrite(model, lowering="split", passes=["fold_everything"])
    with pytest.raises(MixdeployError, match="unknown lowering"):
        rewrite(model, lowering="fastest")
