"""`mixdeploy export`, end to end through the CLI, on the committed Fashion-MNIST checkpoint.

The reference is the PyTorch model itself: the manifest's parity summary must agree with an
independent LiteRT run here, and every file it lists must hash to what is on disk.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from mixdeploy.manifest import sha256_file


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


@pytest.fixture(scope="module")
def exported(trained_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "mixnet-s"
    result = run_cli("export", "mixnet-s", "--weights", trained_checkpoint, "--int8", "--calib", "fashion-mnist",
                     "--calib-count", 32, "--parity-count", 300, "--lowering", "decompose", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_export_writes_every_artifact_and_a_manifest_that_hashes_them(exported):
    out, manifest = exported
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model.opt.onnx", "model_fp32.tflite", "model_int8.tflite", "manifest.json"} <= names
    assert not [n for n in names if n.startswith(".")], "staging leftovers in the output folder"
    for record in manifest["files"]:
        assert sha256_file(out / record["path"]) == record["sha256"]
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert manifest["preprocessing"]["input_size"] == 32
    assert manifest["input_layout"] == "NHWC"
    assert manifest["quantization"]["calibration_images"] == 32


def test_export_int8_model_is_full_integer_nhwc_with_no_transpose(exported):
    from mixdeploy.tflite.inspect import inspect_tflite

    out, _ = exported
    facts = inspect_tflite(out / "model_int8.tflite")
    assert facts.op_histogram.get("TRANSPOSE", 0) == 0
    assert facts.inputs[0]["dtype"] == "int8" and list(facts.inputs[0]["shape"]) == [1, 32, 32, 3]
    assert not facts.large_depthwise, "decompose left a depthwise kernel over 5x5"


def test_export_parity_summary_matches_an_independent_run(exported, trained_model):
    from mixdeploy.data import load_images
    from mixdeploy.runtimes import TfliteRunner, TorchRunner

    out, manifest = exported
    summary = manifest["parity"]
    assert summary["images"] == 300
    images = load_images("fashion-mnist", trained_model.preprocessing, limit=300, split="test")
    reference = TorchRunner(trained_model.module).run(images.images).argmax(1)
    int8 = TfliteRunner(out / "model_int8.tflite").run(images.images).argmax(1)
    assert summary["backends"]["model_int8.tflite"]["top1_agreement"] == pytest.approx(float(np.mean(reference == int8)))
    assert summary["reference_top1"] == pytest.approx(float(np.mean(reference == images.labels)))
    assert summary["backends"]["model_fp32.tflite"]["top1_agreement"] == 1.0


def test_export_onnx_format_stops_after_the_rewrite(tmp_path):
    out = tmp_path / "onnx-only"
    result = run_cli("export", "mixnet-s", "--num-classes", 10, "--input-size", 32, "--format", "onnx",
                     "--lowering", "split", "-o", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx", "model.opt.onnx"]


@pytest.mark.parametrize("args, message", [
    (["no-such-net"], "unknown model"),
    (["mixnet-s", "--weights", "missing.pt"], "missing.pt"),
    (["mixnet-s", "--keep-float", "conv_stem"], "add --int8"),
    (["mixnet-s", "--int8", "--keep-float", " , "], "give node names"),
])
def test_export_user_errors_exit_2_and_leave_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_cli("export", *args, "-o", out)
    assert result.exit_code == 2
    assert message in result.output.lower() or message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_export_with_an_empty_calibration_folder_leaves_no_tflite(tmp_path):
    empty = tmp_path / "calib"
    empty.mkdir()
    out = tmp_path / "out"
    result = run_cli("export", "mixnet-s", "--num-classes", 10, "--input-size", 32, "--int8", "--lowering", "split",
                     "--calib", empty, "-o", out)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert not list(out.glob("**/*.tflite")) and not list(out.glob("**/*.onnx"))


def test_export_keep_float_leaves_the_named_layers_float_and_records_them(trained_checkpoint, tmp_path):
    from convert_support import assert_only_these_float, float_weighted_ops
    from mixdeploy.tflite.inspect import inspect_tflite

    out = tmp_path / "out"
    result = run_cli("export", "mixnet-s", "--weights", trained_checkpoint, "--int8", "--calib", "fashion-mnist",
                     "--calib-count", 16, "--parity-count", 100, "--lowering", "split", "--io-dtype", "float32",
                     "--keep-float", "conv_stem,classifier", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["quantization"]["keep_float"] == ["conv_stem", "classifier"]
    assert_only_these_float(out / "model_int8.tflite", ["conv_stem", "classifier"])
    assert len(float_weighted_ops(out / "model_fp32.tflite")) > 20      # (the fp32 model: every layer)
    assert inspect_tflite(out / "model_int8.tflite").inputs[0]["dtype"] == "float32"
    assert manifest["parity"]["backends"]["model_int8.tflite"]["top1_agreement"] >= 0.95


def test_export_keep_float_of_an_unknown_node_exits_2_and_leaves_nothing(trained_checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run_cli("export", "mixnet-s", "--weights", trained_checkpoint, "--int8", "--calib", "fashion-mnist",
                     "--calib-count", 16, "--lowering", "split", "--keep-float", "no_such_node", "-o", out)
    assert result.exit_code == 2, result.output
    assert "no_such_node" in result.output and "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
    assert not reference_threads(), "the background parity reference outlived the failed export"


def reference_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("mixdeploy-parity-reference")]


class SlowModule(torch.nn.Module):
    """A stand-in reference: 10 logits per image, 20 ms per forward pass, counting its passes."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 10))
        self.calls = 0

    def forward(self, batch):
        import time

        self.calls += 1
        time.sleep(0.02)
        return self.net(batch)


def test_the_background_reference_gives_the_main_threads_logits():
    from types import SimpleNamespace

    from mixdeploy.pipeline import _reference_in_background
    from mixdeploy.runtimes import TorchRunner

    images = np.random.default_rng(0).normal(size=(10, 3, 224, 224)).astype(np.float32)
    module = SlowModule()
    with _reference_in_background(SimpleNamespace(module=module), images) as reference:
        run = reference.result(timeout=60)
    np.testing.assert_array_equal(run.logits, TorchRunner(module).run(images))
    assert run.backend == "pytorch" and not reference_threads()


def test_a_failed_export_abandons_the_background_reference_at_its_next_batch():
    import time
    from types import SimpleNamespace

    from mixdeploy.pipeline import _reference_in_background

    module = SlowModule()
    images = np.zeros((400, 3, 224, 224), np.float32)   # 100 passes of 4 images: 2 s if run to the end
    with pytest.raises(RuntimeError, match="conversion failed"):
        with _reference_in_background(SimpleNamespace(module=module), images):
            while module.calls == 0:
                time.sleep(0.005)
            raise RuntimeError("conversion failed")
    assert not reference_threads()          # joined before the error left the block
    assert module.calls < 20, f"the reference ran {module.calls} of 100 passes after the export failed"
