"""Precision modes: full-integer int8 (int8 or float I/O), 16x8, fp16, dynamic range; progress; keep_float."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from mixdeploy.tflite.convert import convert_onnx
from mixdeploy.tflite.inspect import inspect_tflite
from convert_support import WORKDIR, conv_model, mixconv_graph, ort_run, real_images, tflite_run, timm_onnx

RNG = np.random.default_rng(3)


def calibration(n=16, size=16):
    return RNG.standard_normal((n, 3, size, size)).astype(np.float32)


def wide_conv_graph(channels=48, size=16):
    """A 1x1 conv with enough weights (> 1024) that dynamic-range quantization touches it."""
    from onnx import TensorProto, helper, numpy_helper

    w = RNG.standard_normal((channels, 3, 3, 3)).astype(np.float32)
    w2 = RNG.standard_normal((channels, channels, 1, 1)).astype(np.float32) / channels
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv3x3", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="last_conv", kernel_shape=[1, 1])]
    return helper.make_model(helper.make_graph(
        nodes, "wide", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(w2, "w2")]),
        opset_imports=[helper.make_opsetid("", 17)])


def cosine(a, b):
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@pytest.mark.parametrize("io_dtype", ["int8", "float32"])
def test_full_integer_int8(io_dtype):
    model = mixconv_graph()
    calls = []
    out = WORKDIR / f"int8_{io_dtype}.tflite"
    result = convert_onnx(model, out, precision="int8", calibration=calibration(), io_dtype=io_dtype,
                          progress=lambda done, total: calls.append((done, total)))
    inspection = inspect_tflite(out)
    assert inspection.inputs[0]["dtype"] == io_dtype and inspection.outputs[0]["dtype"] == io_dtype
    # every op runs in int8: with float I/O only the boundary QUANTIZE/DEQUANTIZE touch float
    float_ops = {"QUANTIZE", "DEQUANTIZE"} if io_dtype == "float32" else set()
    assert set(result.op_histogram) - float_ops == {"CONV_2D", "SPLIT", "DEPTHWISE_CONV_2D", "CONCATENATION"}
    assert result.quantization["calibration_images"] == 16 and result.quantization["io_dtype"] == io_dtype
    assert calls and calls[-1] == (16, 16) and [c[0] for c in calls] == sorted(c[0] for c in calls)
    x = calibration(4)
    assert cosine(tflite_run(out, x), ort_run(model, x)) > 0.99


def test_int16x8():
    model = mixconv_graph()
    out = WORKDIR / "int16x8.tflite"
    result = convert_onnx(model, out, precision="int16x8", calibration=calibration())
    assert result.inputs[0]["dtype"] == "int16"
    x = calibration(4)
    assert cosine(tflite_run(out, x), ort_run(model, x)) > 0.9999


@pytest.mark.parametrize("precision,min_cosine,weight_type", [("fp16", 0.99999, "FLOAT16"), ("dynamic", 0.999, "INT8")])
def test_float_activation_modes(precision, min_cosine, weight_type):
    model = wide_conv_graph()
    out = WORKDIR / f"{precision}.tflite"
    result = convert_onnx(model, out, precision=precision)
    assert result.inputs[0]["dtype"] == "float32"
    x = calibration(4)
    assert cosine(tflite_run(out, x), ort_run(model, x)) > min_cosine
    assert weight_type in inspect_tflite(out).tensor_dtypes   # weights are stored smaller


def test_keep_float_keeps_named_node_in_float():
    model = mixconv_graph()
    out = WORKDIR / "keep.tflite"
    result = convert_onnx(model, out, precision="int8", calibration=calibration(), io_dtype="float32",
                          keep_float=["dw7"])
    inspection = inspect_tflite(out)
    # the 7x7 depthwise runs in float: its weights stay FLOAT32 and DEQUANTIZE/QUANTIZE surround it
    assert "FLOAT32" in inspection.tensor_dtypes
    assert result.op_histogram.get("DEQUANTIZE", 0) >= 1
    assert any("dw7" in note for note in result.notes)


def test_int8_mixnet_runs_in_litert():
    """A whole (random-init) MixNet-S: full-integer with int8 I/O, runs, outputs finite numbers."""
    model = onnx.load(str(timm_onnx("mixnet_s")))
    out = WORKDIR / "mixnet_s_int8.tflite"
    images = real_images(64, 4)
    result = convert_onnx(model, out, precision="int8", calibration=images)
    assert result.precision == "int8" and result.file_size == out.stat().st_size
    inspection = inspect_tflite(out)
    assert inspection.inputs[0]["dtype"] == "int8" and inspection.outputs[0]["dtype"] == "int8"
    assert set(inspection.tensor_dtypes) <= {"INT8", "INT32"}
    assert inspection.transpose_count == 0
    logits = tflite_run(out, images[:2])
    assert np.all(np.isfinite(logits)) and logits.shape == (2, 1000)


def test_int8_grouped_conv_stays_one_op_and_runs():
    model = conv_model(group=2, cin=16, cout=16, k=1, pads=[0, 0, 0, 0])
    out = WORKDIR / "grouped_int8.tflite"
    result = convert_onnx(model, out, precision="int8", calibration=RNG.standard_normal((16, 16, 12, 12)).astype(np.float32))
    assert result.op_histogram == {"CONV_2D": 1}
    assert inspect_tflite(out).grouped_convs[0]["groups"] == 2
    x = RNG.standard_normal((4, 16, 12, 12)).astype(np.float32)
    assert cosine(tflite_run(out, x), ort_run(model, x)) > 0.999


def test_constant_tensor_gets_a_usable_int8_range(tmp_path):
    """A conv that only ever reads padding (decomposed large kernels at low resolution) outputs a
    constant; its zero-width range used to give a 1e-8 scale that made XNNPACK abort the process.
    Run LiteRT (default delegates) in a subprocess so a crash fails this test, not the suite."""
    import subprocess
    import sys

    from onnx import TensorProto, helper, numpy_helper

    w = RNG.standard_normal((4, 1, 7, 1)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0, 0, 3, 3, 0, 0, 3, 3]), "p"),
             numpy_helper.from_array(np.array([6]), "s"), numpy_helper.from_array(np.array([8]), "e"),
             numpy_helper.from_array(np.array([3]), "a")]
    nodes = [helper.make_node("Pad", ["x", "p"], ["padded"]),
             helper.make_node("Slice", ["padded", "s", "e", "a"], ["only_padding"]),   # columns 6..7: all zeros
             helper.make_node("Conv", ["only_padding", "w"], ["y"], group=4, kernel_shape=[7, 1])]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 2, 2])], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    out = tmp_path / "constant.tflite"
    convert_onnx(model, out, precision="int8", calibration=RNG.standard_normal((4, 4, 2, 2)).astype(np.float32))
    scale = inspect_tflite(out).outputs[0]["scale"]
    assert scale > 1e-6
    script = ("import numpy as np; from ai_edge_litert.interpreter import Interpreter; "
              f"it = Interpreter(model_path={str(out)!r}); it.allocate_tensors(); d = it.get_input_details()[0]; "
              "it.set_tensor(d['index'], np.zeros(d['shape'], d['dtype'])); it.invoke(); print('ran')")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "ran" in run.stdout, run.stderr[-500:]


def test_keep_float_reaches_the_op_that_produces_the_graph_output():
    """The last op's output is renamed after the signature; its weights still identify it."""
    model = wide_conv_graph()
    out = WORKDIR / "keep_last.tflite"
    result = convert_onnx(model, out, precision="int8", calibration=calibration(8), io_dtype="float32",
                          keep_float=["last_conv"])
    inspection = inspect_tflite(out)
    # the kept conv computes in float: its weights stay FLOAT32, a DEQUANTIZE feeds it
    assert "FLOAT32" in inspection.tensor_dtypes
    assert inspection.outputs[0]["dtype"] == "float32"
    assert result.op_histogram.get("DEQUANTIZE", 0) >= 1


def test_fp32_then_int8_of_one_graph_traces_once_and_builds_the_same_models(monkeypatch, tmp_path):
    """The export converts one graph to fp32 and then int8: the second call reuses the trace and the
    float flatbuffer, and what it writes is byte for byte what a conversion from scratch writes."""
    import mixdeploy.tflite.convert as convert
    import mixdeploy.tflite.graph as graph

    model, images = wide_conv_graph(), calibration()
    fresh_fp32 = convert_onnx(model, tmp_path / "fresh_fp32.tflite").sha256
    convert._last_traced.clear()
    fresh_int8 = convert_onnx(model, tmp_path / "fresh_int8.tflite", precision="int8", calibration=images).sha256
    traces = []
    real_trace = graph.trace_onnx
    monkeypatch.setattr(graph, "trace_onnx", lambda *a, **k: traces.append(1) or real_trace(*a, **k))
    convert._last_traced.clear()
    assert convert_onnx(model, tmp_path / "fp32.tflite").sha256 == fresh_fp32
    assert convert_onnx(model, tmp_path / "int8.tflite", precision="int8", calibration=images).sha256 == fresh_int8
    assert len(traces) == 1
    # another graph (or layout) is traced anew, not served the kept one
    other = wide_conv_graph(channels=40)
    convert_onnx(other, tmp_path / "other.tflite")
    convert_onnx(model, tmp_path / "nchw.tflite", input_layout="nchw")
    assert len(traces) == 3
    assert inspect_tflite(tmp_path / "other.tflite").outputs[0]["shape"][-1] == 40
