"""timm's depthwise families (not MixNets) through `mixdeploy export timm:NAME --weights ...`.

One small member per family, 64 px, 10 classes, BatchNorm statistics randomized (so a wrong BN
fold, padding or activation shows in the logits), saved as a checkpoint the CLI loads. The fp32
TFLite must equal onnxruntime on the exported, un-rewritten model.onnx (relative error < 1e-4),
checked with our own sessions on real photos. docs/byo.md has the wider survey
(benchmarks/timm_families.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from convert_support import ort_run, real_images, relative_error, tflite_run
from model_support import randomize_batchnorm
from timm_oracle import timm

from cli import cli

SIZE = 64
EXACT = 1e-4
FAMILIES = {   # family -> its smallest member; what each one exercises
    "mobilenetv2": "mobilenetv2_035",          # ReLU6 (Clip), linear bottlenecks
    "mobilenetv3": "mobilenetv3_small_050",    # HardSwish, HardSigmoid SE gates
    "mnasnet": "mnasnet_small",                # ReLU, 5x5 depthwise, SE
    "tinynet": "tinynet_e",                    # EfficientNet blocks: SiLU (Sigmoid*Mul), SE
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_timm_family_converts_exactly_in_fp32(family, tmp_path):
    name = FAMILIES[family]
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10)
    randomize_batchnorm(model, torch.from_numpy(real_images(SIZE, 4)))
    weights = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), weights)

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", f"timm:{name}", "--weights", str(weights), "--input-size", str(SIZE),
                                      "--lowering", "split", "--parity-count", "4", "-o", str(out), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["model"]["source_kind"] == "timm" and manifest["model"]["num_classes"] == 10
    ops = manifest["stages"]["convert"]["fp32"]["op_histogram"]
    assert ops.get("DEPTHWISE_CONV_2D", 0) > 0 and "TRANSPOSE" not in ops

    images = real_images(SIZE, 4)
    fp32 = tflite_run(out / "model_fp32.tflite", images)
    assert relative_error(fp32, ort_run(out / "model.onnx", images)) < EXACT
    with torch.no_grad():
        assert relative_error(fp32, model.eval()(torch.from_numpy(images)).numpy()) < EXACT
