"""inspect_tflite and `mixdeploy inspect`: facts read from the flatbuffer, checked against independent sources."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cli import cli
from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.convert import convert_onnx
from mixdeploy.tflite.inspect import inspect_tflite
from convert_support import conv_attrs, mixconv_graph, timm_onnx


@pytest.fixture(scope="module")
def mixconv_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inspect")
    model = mixconv_graph()
    calibration = np.random.default_rng(1).standard_normal((8, 3, 16, 16)).astype(np.float32)
    fp32 = convert_onnx(model, folder / "fp32.tflite").path
    int8 = convert_onnx(model, folder / "int8.tflite", precision="int8", calibration=calibration).path
    return fp32, int8


def test_fp32_inspection(mixconv_models):
    fp32, _ = mixconv_models
    result = inspect_tflite(fp32)
    assert result.op_histogram == {"CONV_2D": 1, "SPLIT": 1, "DEPTHWISE_CONV_2D": 2, "CONCATENATION": 1}
    assert result.large_depthwise and [d["kernel"] for d in result.large_depthwise] == [[7, 7]]
    assert result.transpose_count == 0
    assert result.file_size == fp32.stat().st_size
    assert result.inputs[0]["shape"] == [1, 16, 16, 3] and result.inputs[0]["dtype"] == "float32"
    assert result.concatenations[0].output_scale is None and not result.mismatched_concats


def test_int8_concat_scales_agree_with_litert(mixconv_models):
    """The scales we read from the flatbuffer are the ones LiteRT's interpreter reports."""
    from ai_edge_litert.interpreter import Interpreter

    _, int8 = mixconv_models
    result = inspect_tflite(int8)
    assert result.inputs[0]["dtype"] == "int8" and result.outputs[0]["dtype"] == "int8"
    assert "FLOAT32" not in result.tensor_dtypes
    interpreter = Interpreter(model_path=str(int8))
    by_name = {t["name"]: t for t in interpreter.get_tensor_details()}
    [concat] = result.concatenations
    assert concat.output_scale == pytest.approx(by_name[concat.output]["quantization"][0], rel=1e-7)
    # TFLite's int8 concat: inputs share the output's scale, so nothing is flagged
    assert concat.mismatched is any(s != pytest.approx(concat.output_scale) for s in concat.input_scales)


def test_mixnet_large_depthwise_count_matches_onnx(tmp_path):
    model = onnx.load(str(timm_onnx("mixnet_s")))
    expected = sum(1 for n in model.graph.node if n.op_type == "Conv" and conv_attrs(n).get("group", 1) > 1
                   and np.prod(conv_attrs(n)["kernel_shape"]) > 25)
    result = inspect_tflite(convert_onnx(model, tmp_path / "m.tflite").path)
    assert len(result.large_depthwise) == expected > 0


@pytest.mark.parametrize("cut", [0, 7, 100, 0.5, 0.9])
def test_truncated_or_foreign_files(mixconv_models, tmp_path, cut):
    data = mixconv_models[0].read_bytes()
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    with pytest.raises(MixdeployError):
        inspect_tflite(bad)


def test_cli_json_and_errors(mixconv_models, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["inspect", str(mixconv_models[1]), "--json"])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.output)
    assert payload["op_histogram"]["CONCATENATION"] == 1 and payload["transpose_count"] == 0
    assert payload["inputs"][0]["dtype"] == "int8"

    table = runner.invoke(cli, ["inspect", str(mixconv_models[1])])
    assert table.exit_code == 0 and "DEPTHWISE_CONV_2D" in table.output

    text = tmp_path / "notes.tflite"
    text.write_text("hello")
    failed = runner.invoke(cli, ["inspect", str(text)])
    assert failed.exit_code == 2 and "not a TFLite model" in failed.output
    assert "Traceback" not in failed.output
