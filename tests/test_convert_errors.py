"""User mistakes give a MixdeployError that says what to do, and never leave a .tflite behind."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.convert import convert_onnx, load_onnx


def det_graph():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("Det", ["r"], ["y"], name="my_determinant")]
    return helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
        opset_imports=[helper.make_opsetid("", 17)])


def tiny_conv_graph(size=8):
    w = onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, size, size])], [w]),
        opset_imports=[helper.make_opsetid("", 17)])


def test_unsupported_op_names_node_and_op(tmp_path):
    out = tmp_path / "det.tflite"
    with pytest.raises(MixdeployError) as err:
        convert_onnx(det_graph(), out)
    message = str(err.value)
    assert "my_determinant" in message and "Det" in message
    assert "opset 17" in message   # the hint says what to try
    assert "first_relu" not in message
    assert not out.exists()


def test_corrupt_onnx_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(tiny_conv_graph().SerializeToString()[:37])
    with pytest.raises(MixdeployError, match="not a (valid|readable) ONNX model"):
        load_onnx(path)
    out = tmp_path / "broken.tflite"
    with pytest.raises(MixdeployError):
        convert_onnx(path, out)
    assert not out.exists()


def test_graph_reading_an_undefined_tensor(tmp_path):
    model = tiny_conv_graph()
    model.graph.node[0].input[0] = "nowhere"
    out = tmp_path / "dangling.tflite"
    with pytest.raises(MixdeployError, match="nowhere"):
        convert_onnx(model, out)
    assert not out.exists()


@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (4, 8, 8, 3), (3, 8, 8)])
def test_calibration_of_wrong_shape(tmp_path, shape):
    out = tmp_path / "bad_cal.tflite"
    with pytest.raises(MixdeployError, match=r"calibration data has shape") as err:
        convert_onnx(tiny_conv_graph(), out, precision="int8", calibration=np.zeros(shape, np.float32))
    assert "(N, 3, 8, 8)" in str(err.value)
    assert not out.exists()
    assert not list(tmp_path.iterdir())   # no temp file left either


def test_int8_without_calibration(tmp_path):
    with pytest.raises(MixdeployError, match="needs calibration images"):
        convert_onnx(tiny_conv_graph(), tmp_path / "x.tflite", precision="int8")


def test_unknown_precision_and_layout(tmp_path):
    with pytest.raises(MixdeployError, match="unknown precision"):
        convert_onnx(tiny_conv_graph(), tmp_path / "x.tflite", precision="int4")
    with pytest.raises(MixdeployError, match="input_layout"):
        convert_onnx(tiny_conv_graph(), tmp_path / "x.tflite", input_layout="chwn")
    assert not list(tmp_path.iterdir())


def test_nan_calibration(tmp_path):
    data = np.zeros((2, 3, 8, 8), np.float32)
    data[1, 0, 0, 0] = np.nan
    with pytest.raises(MixdeployError, match="NaN"):
        convert_onnx(tiny_conv_graph(), tmp_path / "x.tflite", precision="int8", calibration=data)
