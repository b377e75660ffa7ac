"""export_onnx against torch itself (the module it exported) and load_onnx's error messages."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from mixdeploy.errors import MixdeployError
from mixdeploy.onnx import load_onnx
from mixdeploy.onnx.export import export_onnx, module_path_from_scope
from rewrite_helpers import chelsea, rel_err, run_ort
from timm_oracle import timm

SIZE = 64


@pytest.fixture(scope="module")
def timm_export(tmp_path_factory):
    module = timm.create_model("mixnet_s").eval()
    path = tmp_path_factory.mktemp("export") / "mixnet_s.onnx"
    return module, export_onnx(module, SIZE, path, dynamic_batch=True)


def test_export_matches_torch_and_is_opset17(timm_export):
    module, result = timm_export
    model = onnx.load(result.path)
    assert result.opset == 17 and {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    x = np.concatenate([chelsea(SIZE), np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE))]).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert rel_err(ref, run_ort(model, x)) < 1e-4  # batch 2 through the dynamic batch dim
    assert result.op_histogram["Split"] == result.op_histogram["Concat"] > 0
    assert not list(result.path.parent.glob("*.part"))  # atomic write left no temp file


def test_export_names_nodes_by_module_path(timm_export):
    _, result = timm_export
    names = {n.name for n in onnx.load(result.path).graph.node}
    # the second group conv of the first MixConv, exactly as in the state dict ('blocks.2.0.conv_dw.1.weight')
    assert {"conv_stem", "blocks.2.0.conv_dw.1", "blocks.2.0.conv_dw/Split", "classifier"} <= names
    state_keys = {k.rsplit(".", 1)[0] for k in timm.create_model("mixnet_s").state_dict()}
    convs = [n.name for n in onnx.load(result.path).graph.node if n.op_type == "Conv"]
    assert all(c in state_keys for c in convs)


def test_module_path_from_scope():
    assert module_path_from_scope("/blocks/blocks.2/blocks.2.0/conv_dw/conv_dw.1/Conv") == ("blocks.2.0.conv_dw.1", "Conv")
    assert module_path_from_scope("/bn1/act/Relu") == ("bn1.act", "Relu")
    assert module_path_from_scope("Conv_3") == ("", "Conv_3")


def test_export_failure_is_a_user_error(tmp_path):
    class NeedsTwoInputs(torch.nn.Module):
        def forward(self, x, y):
            return x + y

    with pytest.raises(MixdeployError, match="torch.onnx.export failed"):
        export_onnx(NeedsTwoInputs(), 8, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


# ------------------------------------------------------------------ load_onnx

def test_load_onnx_round_trip(timm_export):
    _, result = timm_export
    assert load_onnx(result.path).graph.node


def test_load_onnx_not_a_model(tmp_path):
    path = tmp_path / "notes.onnx"
    path.write_text("this is a text file, not a protobuf\n" * 10)
    with pytest.raises(MixdeployError, match="not a readable ONNX model|holds no ONNX graph"):
        load_onnx(path)


def test_load_onnx_truncated(timm_export, tmp_path):
    _, result = timm_export
    data = result.path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MixdeployError, match="truncated"):
        load_onnx(path)


def test_load_onnx_missing_and_empty(tmp_path):
    with pytest.raises(MixdeployError, match="no such file"):
        load_onnx(tmp_path / "nope.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(MixdeployError, match="empty"):
        load_onnx(tmp_path / "empty.onnx")


@pytest.fixture(scope="module")
def dynamic_hw_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("dyn") / "dyn.onnx"
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1))
    torch.onnx.export(conv.eval(), torch.zeros(1, 3, 16, 16), path, dynamo=False, input_names=["input"],
                      dynamic_axes={"input": {0: "N", 2: "H", 3: "W"}})
    return path


def test_load_onnx_dynamic_spatial_shape_asks_for_input_size(dynamic_hw_path):
    with pytest.raises(MixdeployError, match=r"dynamic spatial size \(H, W\).*--input-size"):
        load_onnx(dynamic_hw_path)


def test_load_onnx_pins_dynamic_spatial_shape(dynamic_hw_path):
    model = load_onnx(dynamic_hw_path, input_size=24)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[2:]] == [24, 24]
    x = np.random.default_rng(0).standard_normal((1, 3, 24, 24)).astype(np.float32)
    assert run_ort(model, x).shape == (1, 8, 1, 1)
