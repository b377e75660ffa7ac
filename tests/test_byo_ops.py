"""Converter ops added for bring-your-own models: each equals onnxruntime.

InstanceNormalization is what torch exports GroupNorm as (timm's efficientnet_*_gn variants):
Reshape(N, G, -1) -> InstanceNormalization on 3-D -> Reshape back. Tested on its own (4-D,
NHWC-native) and in that GroupNorm pattern, with non-trivial scale and bias.
"""

from __future__ import annotations

import numpy as np
import torch
from onnx import helper
from convert_support import WORKDIR, graph, ort_run, relative_error, tflite_run
from torch import nn

from mixdeploy.tflite.convert import convert_onnx

RNG = np.random.default_rng(7)
EXACT = 1e-5


def _inputs(shape):
    # an offset and a spread per channel, so a wrong mean or variance axis shows
    return (RNG.standard_normal((2, *shape[1:])) * 3 + RNG.standard_normal((1, shape[1], 1, 1))).astype(np.float32)


def test_instance_normalization_4d_is_nhwc_native():
    channels = 6
    scale, bias = RNG.standard_normal(channels).astype(np.float32), RNG.standard_normal(channels).astype(np.float32)
    node = helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["y"], name="inorm", epsilon=1e-3)
    model = graph([node], [1, channels, 9, 7], [1, channels, 9, 7], [("scale", scale), ("bias", bias)])
    out = WORKDIR / "byo_instance_norm.tflite"
    result = convert_onnx(model, out)
    x = _inputs([1, channels, 9, 7])
    assert relative_error(tflite_run(out, x), ort_run(model, x)) < EXACT
    assert "TRANSPOSE" not in result.op_histogram


def test_group_norm_as_torch_exports_it(tmp_path):
    module = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
                           nn.Conv2d(16, 16, 3, padding=1, groups=16)).eval()
    with torch.no_grad():
        module[1].weight.normal_()
        module[1].bias.normal_()
    path = tmp_path / "gn.onnx"
    with torch.no_grad():
        torch.onnx.export(module, torch.zeros(1, 3, 12, 12), str(path), dynamo=False, opset_version=17)
    out = tmp_path / "gn.tflite"
    result = convert_onnx(path, out)
    x = _inputs([1, 3, 12, 12])
    assert relative_error(tflite_run(out, x), ort_run(path, x)) < EXACT
    assert result.op_histogram["DEPTHWISE_CONV_2D"] == 1
