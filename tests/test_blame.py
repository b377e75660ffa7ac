"""mixdeploy.blame: QuantizationDebugger's per-layer ranking finds a deliberately damaged layer."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest

from mixdeploy import blame

TARGET = "blocks.2.0.conv_pwl"   # a 1x1 projection conv in the middle of MixNet-S


def tflite_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def break_calibrated_range(calibrated: blame.CalibratedModel, node: str, factor: float = 0.05) -> blame.CalibratedModel:
    """Shrink the calibrated min/max of `node`'s output tensor(s): int8 then clips that layer hard.

    This is "quantizing with a broken range": the float function is untouched, only the range the
    quantizer will use for this one layer is wrong.
    """
    schema = tflite_schema()
    data = bytearray(calibrated.flatbuffer)
    model = schema.Model.GetRootAsModel(data, 0)
    graph = model.Subgraphs(0)
    damaged = 0
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        for k in range(op.OutputsLength()):
            tensor = graph.Tensors(op.Outputs(k))
            nodes = blame.onnx_nodes_for_tensor(tensor.Name().decode(), calibrated.node_scopes)
            quant = tensor.Quantization()
            if node in nodes and quant is not None and quant.MinLength():
                quant.MinAsNumpy()[:] *= factor      # writable views into `data`
                quant.MaxAsNumpy()[:] *= factor
                damaged += 1
    assert damaged, f"no calibrated output tensor of {node}"
    return dataclasses.replace(calibrated, flatbuffer=bytes(data))


@pytest.fixture(scope="module")
def calibrated(trained_artifacts):
    model = onnx.load(str(trained_artifacts.onnx_opt))
    assert any(n.name == TARGET for n in model.graph.node)
    return blame.calibrate(model, trained_artifacts.calibration[:16])


def test_damaged_layer_is_ranked_first(calibrated, trained_artifacts):
    report = blame.blame_calibrated(break_calibrated_range(calibrated, TARGET), trained_artifacts.calibration[:16])
    print("\n" + report.to_markdown(5))
    assert TARGET in report.layers[0].onnx_nodes
    # clearly separated from the rest, and far above pure rounding error
    assert report.layers[0].rmse_over_scale > 3 * report.layers[1].rmse_over_scale
    assert report.layers[0].rmse_over_scale > 5 * blame.IDEAL_RMSE_OVER_SCALE
    assert blame.suggest_keep_float(report)[0] == TARGET


def test_undamaged_model_has_no_such_outlier(calibrated, trained_artifacts):
    """The control: without the damage the same layer is unremarkable (below the bar the damaged one clears)."""
    report = blame.blame_calibrated(calibrated, trained_artifacts.calibration[:16])
    target = [layer for layer in report.layers if TARGET in layer.onnx_nodes]
    assert target and target[0].rmse_over_scale < 5 * blame.IDEAL_RMSE_OVER_SCALE
    assert target[0].rank > 1


def test_tensor_names_map_back_to_onnx_nodes():
    scopes = {"blocks.1.0.conv_pw": "blocks.1.0.conv_pw", "blocks.1.0.conv_pw.0": "blocks.1.0.conv_pw.0",
              "bn1.act/Relu": "bn1.act/Relu", "conv_stem": "conv_stem"}
    assert blame.onnx_nodes_for_tensor("blocks.1.0.conv_pw.0/Conv2D1", scopes) == ["blocks.1.0.conv_pw.0"]
    assert blame.onnx_nodes_for_tensor("bn1.act/Relu/Relu;conv_stem/Conv2D", scopes) == ["bn1.act/Relu", "conv_stem"]
    assert blame.onnx_nodes_for_tensor("unrelated/op", scopes) == []


def test_keep_float_reexport_leaves_the_layer_float_and_reports_its_cost(trained_artifacts, tmp_path):
    model = onnx.load(str(trained_artifacts.onnx_opt))
    result = blame.reexport_keep_float(model, [TARGET], trained_artifacts.calibration[:16],
                                       tmp_path / "keep.tflite", trained_artifacts.tflite_int8)
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(result.path)).get_tensor_details()
    target_outputs = [d for d in details if TARGET + "/" in d["name"] and d["dtype"] == np.float32]
    assert target_outputs, "the kept layer should compute in float"
    assert result.candidate.file_size > result.baseline.file_size   # float weights take 4x the bytes
    assert result.baseline.latency_ms > 0 and result.candidate.latency_ms > 0
    assert result.to_dict()["keep_float"] == [TARGET]
