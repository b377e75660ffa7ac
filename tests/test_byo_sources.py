"""Bring-your-own sources without conversion: `pkg.module:factory` and FILE.onnx resolve to a
model with its facts, and every user mistake is one clear error (exit 2, no traceback, no files).

The factories below are real importable functions (this file is on sys.path as `test_byo_sources`).
"""

from __future__ import annotations

import hashlib
import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cli import cli
from mixdeploy.errors import MixdeployError
from mixdeploy.models import load_model
from mixdeploy.preprocess import PreprocessingOverrides

HERE = "test_byo_sources"


class TinyNet(nn.Module):
    """Conv -> ReLU -> global pool -> Linear: the smallest image classifier."""

    def __init__(self, num_classes: int = 7, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def make_tiny(num_classes: int = 7, width: int = 8) -> nn.Module:
    return TinyNet(num_classes, width)


def make_nothing():
    return {"not": "a module"}


def make_broken(**kwargs):
    raise ValueError("width must be even")


class CumSumNet(TinyNet):
    """A classifier with one op the converter has no handler for (ONNX CumSum)."""

    def forward(self, x):
        return self.fc(torch.cumsum(torch.relu(self.conv(x)), dim=1).mean((2, 3)))


NOT_CALLABLE = 42


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), f"raised {result.exception!r}, not a clean exit"
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in {result.output!r}"


def export_onnx_file(module, path, size=16, dynamic_axes=None):
    with torch.no_grad():
        torch.onnx.export(module.eval(), torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["logits"], dynamic_axes=dynamic_axes)
    return path


# ---------------------------------------------------------------- factories

def test_factory_builds_the_module_with_its_kwargs_and_weights(tmp_path):
    reference = make_tiny(num_classes=5, width=6)
    weights = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), weights)
    loaded = load_model(f"{HERE}:make_tiny", weights=weights, factory_kwargs={"width": 6}, num_classes=5,
                        preprocessing=PreprocessingOverrides(input_size=24))
    assert loaded.source_kind == "factory" and isinstance(loaded.module, TinyNet)
    assert loaded.num_classes == 5 and loaded.factory_kwargs == {"width": 6, "num_classes": 5}
    assert loaded.weights_sha256 == hashlib.sha256(weights.read_bytes()).hexdigest()
    x = torch.randn(2, 3, 24, 24)
    torch.testing.assert_close(loaded.module(x), reference.eval()(x))
    # nobody said how it was trained: the ImageNet default is a guess and is flagged as one
    assert loaded.preprocessing_guesses() == ["crop_pct", "interpolation", "mean", "std"]
    assert loaded.to_manifest()["source_kind"] == "factory"


def test_flops_takes_a_factory():
    result = run_cli("flops", f"{HERE}:make_tiny", "--input-size", 16, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # 16x16x8 outputs x 27 MACs + the 8x7 Linear
    assert report["conv_linear_macs"] == 16 * 16 * 8 * 27 + 8 * 7


@pytest.mark.parametrize("spec,kwargs,fragments", [
    ("no_such_module_xyz:make", None, ["cannot import module 'no_such_module_xyz'", "PYTHONPATH"]),
    (f"{HERE}:make_tinyy", None, ["has no attribute 'make_tinyy'", "make_tiny"]),
    (f"{HERE}:NOT_CALLABLE", None, ["is a int, not a function"]),
    (f"{HERE}:make_broken", None, ["make_broken() raised ValueError: width must be even"]),
    (f"{HERE}:make_nothing", None, ["returned a dict, not a torch.nn.Module"]),
    (f"{HERE}:make_tiny", '{"width": 4', ["--factory-kwargs is not valid JSON"]),
    (f"{HERE}:make_tiny", "[4]", ["must be a JSON object", "got a JSON list"]),
    (f"{HERE}:make_tiny", '{"depth": 3}', ["make_tiny(depth=3) raised TypeError", "depth"]),
    ("mixnet-s", '{"width": 4}', ["factory kwargs apply to a `pkg.module:function` source"]),
])
def test_factory_mistakes_are_clear_errors(tmp_path, spec, kwargs, fragments):
    args = ["export", spec, "--format", "onnx", "-o", tmp_path / "out"]
    if kwargs is not None:
        args += ["--factory-kwargs", kwargs]
    assert_user_error(run_cli(*args), *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_factory_whose_model_is_not_a_classifier():
    with pytest.raises(MixdeployError, match=r"returns shape \(1, 8, 16, 16\) for one image"):
        load_model(f"{HERE}:make_conv_only", preprocessing=PreprocessingOverrides(input_size=16))


def make_conv_only():
    return nn.Conv2d(3, 8, 3, padding=1)


# ---------------------------------------------------------------- FILE.onnx

def test_onnx_source_reads_its_size_and_classes_and_guesses_the_rest(tmp_path):
    path = export_onnx_file(make_tiny(num_classes=7), tmp_path / "tiny.onnx", size=20,
                            dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}})
    loaded = load_model(str(path))
    assert loaded.source_kind == "onnx" and loaded.module is None
    assert loaded.num_classes == 7 and loaded.preprocessing.input_size == 20
    assert loaded.preprocessing_sources["input_size"] == "ONNX input shape"
    assert loaded.preprocessing_guesses() == ["crop_pct", "interpolation", "mean", "std"]
    assert loaded.onnx_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.params == sum(p.numel() for p in make_tiny(num_classes=7).parameters())


def test_onnx_with_dynamic_spatial_size_needs_input_size(tmp_path):
    path = export_onnx_file(make_tiny(), tmp_path / "dyn.onnx",
                            dynamic_axes={"image": {0: "N", 2: "H", 3: "W"}, "logits": {0: "N"}})
    assert_user_error(run_cli("export", path, "--format", "onnx", "-o", tmp_path / "out"),
                      "dynamic spatial size", "--input-size")
    loaded = load_model(str(path), preprocessing=PreprocessingOverrides(input_size=24))
    assert loaded.preprocessing.input_size == 24 and loaded.preprocessing_sources["input_size"] == "flag"
    dims = loaded.onnx_model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, 24, 24]


def test_onnx_input_size_flag_contradicting_the_file_is_an_error(tmp_path):
    path = export_onnx_file(make_tiny(), tmp_path / "fixed.onnx", size=16)
    assert_user_error(run_cli("export", path, "--input-size", 32, "-o", tmp_path / "out"),
                      "takes a fixed 16x16 input", "input size 32 (from flag) contradicts it")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"pretrained_cfg": {"input_size": [3, 24, 24]}}))
    with pytest.raises(MixdeployError, match=r"input size 24 \(from config .*config.json\) contradicts"):
        load_model(str(path), preprocessing=PreprocessingOverrides(config=config))


def test_onnx_source_refuses_weights_and_nchw_mistakes(tmp_path):
    path = export_onnx_file(make_tiny(), tmp_path / "tiny.onnx", size=16)
    assert_user_error(run_cli("export", path, "--weights", path, "-o", tmp_path / "out"),
                      "--weights/--num-classes apply to PyTorch models")
    nhwc = tmp_path / "nhwc.onnx"
    model = onnx.load(str(path))
    for value in (model.graph.input[0],):
        dims = value.type.tensor_type.shape.dim
        dims[1].dim_value, dims[3].dim_value = 16, 3
    onnx.save(model, str(nhwc))
    with pytest.raises(MixdeployError, match=r"mixdeploy feeds NCHW RGB images"):
        load_model(str(nhwc))


def test_unsupported_op_names_node_and_op_through_export(tmp_path):
    path = export_onnx_file(CumSumNet(), tmp_path / "cumsum.onnx", size=16)
    cumsum = next(n for n in onnx.load(str(path)).graph.node if n.op_type == "CumSum")
    out = tmp_path / "out"
    result = run_cli("export", path, "--lowering", "split", "-o", out)
    assert_user_error(result, "unsupported ONNX op", f"'{cumsum.name}' (CumSum)")
    assert not out.exists(), "a failed export left its new output folder behind"
