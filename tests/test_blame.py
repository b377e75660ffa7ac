"""mixdeploy.blame: QuantizationDebugger's per-layer ranking finds a deliberately damaged layer."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from mixdeploy import blame

TARGET = "blocks.2.0.conv_pwl"   # a 1x1 projection conv in the middle of MixNet-S


def _conv_inputs(model: onnx.ModelProto, node: onnx.NodeProto, images: np.ndarray) -> np.ndarray:
    """The activations entering `node` (onnxruntime, float), shape (N, C, H, W)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(node.input[0]))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run([node.input[0]], {name: img[None]})[0] for img in images])


def damage_weight_quantization(model: onnx.ModelProto, node_name: str, images: np.ndarray) -> onnx.ModelProto:
    """Give every filter of `node_name` one huge weight on its quietest input channel.

    The float function barely changes (that channel carries ~nothing), but per-channel int8 weight
    scales become so coarse that the filter's other weights round to zero: an int8 error born at
    exactly this layer, which a per-layer debugger must rank first.
    """
    damaged = onnx.ModelProto()
    damaged.CopyFrom(model)
    node = next(n for n in damaged.graph.node if n.name == node_name)
    groups = next((a.i for a in node.attribute if a.name == "group"), 1)
    loudness = np.abs(_conv_inputs(damaged, node, images)).max(axis=(0, 2, 3))
    init = next(i for i in damaged.graph.initializer if i.name == node.input[1])
    weights = numpy_helper.to_array(init).copy()
    out_per_group, in_per_group = weights.shape[0] // groups, weights.shape[1]
    for g in range(groups):  # a grouped conv's filters only see their group's input channels
        quietest = int(loudness[g * in_per_group:(g + 1) * in_per_group].argmin())
        weights[g * out_per_group:(g + 1) * out_per_group, quietest] = 1000.0 * np.abs(weights).max()
    init.CopyFrom(numpy_helper.from_array(weights, init.name))
    return damaged


@pytest.fixture(scope="module")
def opt_model(trained_artifacts):
    return onnx.load(str(trained_artifacts.onnx_opt))


def test_damaged_layer_is_ranked_first(opt_model, trained_artifacts):
    calibration = trained_artifacts.calibration[:16]
    assert any(n.name == TARGET for n in opt_model.graph.node), [n.name for n in opt_model.graph.node][:40]
    damaged = damage_weight_quantization(opt_model, TARGET, calibration)
    # debug on the calibration images: no clipping anywhere, so only the damage stands out
    report = blame.blame_int8(damaged, calibration, calibration)
    print("\n" + report.to_markdown(5))
    assert TARGET in report.layers[0].onnx_nodes
    # clearly separated from the rest, and far above pure rounding error
    assert report.layers[0].rmse_over_scale > 3 * report.layers[1].rmse_over_scale
    assert report.layers[0].rmse_over_scale > 5 * blame.IDEAL_RMSE_OVER_SCALE
    assert blame.suggest_keep_float(report)[0] == TARGET


def test_tensor_names_map_back_to_onnx_nodes():
    scopes = {"blocks.1.0.conv_pw": "blocks.1.0.conv_pw", "blocks.1.0.conv_pw.0": "blocks.1.0.conv_pw.0",
              "bn1.act/Relu": "bn1.act/Relu", "conv_stem": "conv_stem"}
    assert blame.onnx_nodes_for_tensor("blocks.1.0.conv_pw.0/Conv2D1", scopes) == ["blocks.1.0.conv_pw.0"]
    assert blame.onnx_nodes_for_tensor("bn1.act/Relu/Relu;conv_stem/Conv2D", scopes) == ["bn1.act/Relu", "conv_stem"]
    assert blame.onnx_nodes_for_tensor("unrelated/op", scopes) == []
