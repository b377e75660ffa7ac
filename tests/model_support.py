"""Small models shared by several test modules (no tests here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn


def randomize_batchnorm(model: nn.Module, calibration: torch.Tensor, seed: int = 0) -> nn.Module:
    """Non-trivial BN affine parameters and running statistics, so a wrong eps, padding or
    activation shows in the logits. The statistics are measured on `calibration` (one
    train-mode pass, cumulative average), which keeps activations and logits of order 1
    instead of exploding through 50 random layers."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(calibration)
    return model.eval()


def tiny_classifier(path, scale: float = 1.0, act: str = "Relu", poison: str | None = None) -> Path:
    """A 16-px ONNX classifier with one MixConv (3x3 + 5x5 depthwise), 10 classes; `poison`
    names an initializer whose first value becomes inf."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 3, 1, 1)).astype(np.float32) * scale,
             "w3": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
             "w5": rng.standard_normal((4, 1, 5, 5)).astype(np.float32) * 0.1,
             "sizes": np.array([4, 4], np.int64),
             "fw": rng.standard_normal((10, 8)).astype(np.float32), "fb": np.zeros(10, np.float32)}
    if poison:
        inits[poison].flat[0] = np.inf
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="pw", kernel_shape=[1, 1]),
             helper.make_node(act, ["c"], ["r"], name="act"),
             helper.make_node("Split", ["r", "sizes"], ["a", "b"], name="split", axis=1),
             helper.make_node("Conv", ["a", "w3"], ["da"], name="dw3", group=4, kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["b", "w5"], ["db"], name="dw5", group=4, kernel_shape=[5, 5], pads=[2] * 4),
             helper.make_node("Concat", ["da", "db"], ["cat"], name="cat", axis=1),
             helper.make_node("GlobalAveragePool", ["cat"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    path = Path(path)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
