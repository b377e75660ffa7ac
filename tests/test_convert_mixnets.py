"""fp32 conversion of whole MixNets: equal to onnxruntime, NHWC without TRANSPOSE, one SPLIT per MixConv."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import pytest

from mixdeploy.tflite.convert import convert_onnx
from mixdeploy.tflite.inspect import inspect_tflite
from convert_support import (SIZE, WORKDIR, conv_attrs, onnx_ops, ort_run, real_images, relative_error,
                                  tflite_run, timm_onnx)

TOLERANCE = 1e-4
HAS_REWRITE = importlib.util.find_spec("mixdeploy.onnx.rewrite") is not None


def inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([real_images(SIZE, 1), rng.standard_normal((1, 3, SIZE, SIZE), np.float32)])


def stride2_convs(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "Conv" and conv_attrs(n).get("strides", [1, 1]) != [1, 1]
               and conv_attrs(n).get("kernel_shape", [1, 1]) != [1, 1])


def convert_and_compare(model: onnx.ModelProto, name: str, reference: onnx.ModelProto | None = None):
    out = WORKDIR / f"{name}.tflite"
    result = convert_onnx(model, out)
    x = inputs()
    error = relative_error(tflite_run(out, x), ort_run(reference or model, x))
    assert error < TOLERANCE, f"{name}: TFLite vs onnxruntime relative error {error:.2e}"
    return result, inspect_tflite(out)


@pytest.mark.parametrize("name", [
    "mixnet_s", "tf_mixnet_s", "mixnet_m",
    pytest.param("mixnet_l", marks=pytest.mark.slow),
])
def test_timm_export_converts_exactly_and_without_transposes(name):
    model = onnx.load(str(timm_onnx(name)))
    result, inspection = convert_and_compare(model, name)
    ops = onnx_ops(model)

    assert inspection.transpose_count == 0
    assert "TRANSPOSE" not in result.op_histogram
    # each ONNX Split becomes one SPLIT/SPLIT_V: no per-group slicing
    assert result.op_histogram.get("SPLIT", 0) + result.op_histogram.get("SPLIT_V", 0) == ops["Split"]
    assert "STRIDED_SLICE" not in result.op_histogram and "SLICE" not in result.op_histogram
    assert result.op_histogram["CONCATENATION"] == ops["Concat"]
    convs = result.op_histogram.get("CONV_2D", 0) + result.op_histogram.get("DEPTHWISE_CONV_2D", 0)
    assert convs == ops["Conv"]
    if name.startswith("tf_"):
        # TF "same" padding (asymmetric at stride 2) maps onto SAME: no PAD at all
        assert "PAD" not in result.op_histogram
    else:
        # PyTorch pads symmetrically; at stride 2 on even sizes that is not TF's SAME, so those
        # convs (and only those) get a PAD; stride-1 convs never do
        assert result.op_histogram.get("PAD", 0) == stride2_convs(model)
    assert result.inputs[0]["shape"] == [1, SIZE, SIZE, 3]
    assert result.outputs[0]["shape"] == [1, 1000]


def test_unsimplified_tf_same_export_folds_its_shape_arithmetic():
    """Without onnxsim, timm's TF-"same" padding computes pads from Shape at run time; shapes are
    static here, so that arithmetic folds and every runtime Pad ends up inside a SAME conv."""
    model = onnx.load(str(timm_onnx("tf_mixnet_s", simplify=False)))
    assert {"Shape", "Gather", "ConstantOfShape", "Pad"} <= set(onnx_ops(model))
    result, inspection = convert_and_compare(model, "tf_mixnet_s_raw")
    assert inspection.transpose_count == 0 and "PAD" not in result.op_histogram


def test_nchw_input_layout_adds_exactly_one_transpose():
    model = onnx.load(str(timm_onnx("mixnet_s")))
    out = WORKDIR / "mixnet_s_nchw.tflite"
    result = convert_onnx(model, out, input_layout="nchw")
    assert result.op_histogram.get("TRANSPOSE") == 1
    assert result.inputs[0]["shape"] == [1, 3, SIZE, SIZE]
    x = inputs()
    assert relative_error(tflite_run(out, x, layout="nchw"), ort_run(model, x)) < TOLERANCE


@pytest.mark.skipif(not HAS_REWRITE, reason="mixdeploy.onnx.rewrite not available yet")
@pytest.mark.parametrize("name,lowering", [
    ("mixnet_s", "split"),
    ("mixnet_s", "decompose"),
    pytest.param("mixnet_s", "pad", marks=pytest.mark.slow),
    pytest.param("tf_mixnet_s", "auto", marks=pytest.mark.slow),
])
def test_rewritten_graph_converts_exactly(name, lowering):
    from mixdeploy.onnx.rewrite import rewrite

    original = onnx.load(str(timm_onnx(name)))
    rewritten = rewrite(original, lowering=lowering).model
    result, inspection = convert_and_compare(rewritten, f"{name}_{lowering}", reference=original)
    ops = onnx_ops(rewritten)

    assert inspection.transpose_count == 0
    assert "BatchNormalization" not in ops   # folded by the rewrite: no MUL/ADD left for BN
    # grouped 1x1 convs (Conv group=k) each became one grouped CONV_2D
    grouped = [n for n in rewritten.graph.node if n.op_type == "Conv" and 1 < conv_attrs(n).get("group", 1)
               and onnx.numpy_helper.to_array(next(i for i in rewritten.graph.initializer
                                                   if i.name == n.input[1])).shape[1] > 1]
    assert len(inspection.grouped_convs) == len(grouped)
    convs = result.op_histogram.get("CONV_2D", 0) + result.op_histogram.get("DEPTHWISE_CONV_2D", 0)
    assert convs == ops["Conv"]
    assert result.op_histogram.get("SPLIT", 0) + result.op_histogram.get("SPLIT_V", 0) == ops.get("Split", 0)
    # every PAD is one XNNPACK folds into the conv reading it (stride-2 symmetric pads, a decomposed
    # piece's own pads: piece_pads), never a copy of a tensor shared by several readers
    from mixdeploy.bench.attribution import model_ops
    from mixdeploy.bench.profile import folded_pad_consumer, read_flatbuffer

    flat = read_flatbuffer(result.path)
    assert all(folded_pad_consumer(flat, op.index) is not None for op in model_ops(result.path) if op.op_name == "PAD")


HAS_OURS = importlib.util.find_spec("mixdeploy.models") is not None and HAS_REWRITE


@pytest.mark.skipif(not HAS_OURS, reason="mixdeploy.models / mixdeploy.onnx not available yet")
@pytest.mark.parametrize("name,lowering", [
    ("mixnet-s", "auto"),
    pytest.param("tf-mixnet-s", "split", marks=pytest.mark.slow),
    pytest.param("mixnet-m", "auto", marks=pytest.mark.slow),
    pytest.param("mixnet-l", "auto", marks=pytest.mark.slow),
])
def test_our_models_through_the_whole_pipeline(name, lowering):
    """mixdeploy's own MixNets: export_onnx -> rewrite -> convert, equal to onnxruntime on the export."""
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    loaded = load_model(name)
    exported = onnx.load(str(export_onnx(loaded.module, SIZE, WORKDIR / f"ours_{name}.onnx").path))
    rewritten = rewrite(exported, lowering=lowering).model
    result, inspection = convert_and_compare(rewritten, f"ours_{name}_{lowering}", reference=exported)
    assert inspection.transpose_count == 0
    assert inspection.grouped_convs   # MixNet's a1.1/p1.1 grouped 1x1 convs survive as grouped CONV_2D
    large = [n for n in rewritten.graph.node if n.op_type == "Conv" and conv_attrs(n).get("group", 1) > 1
             and np.prod(conv_attrs(n)["kernel_shape"]) > 25]
    assert len(inspection.large_depthwise) == len(large)
