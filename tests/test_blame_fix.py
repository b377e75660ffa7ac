"""`mixdeploy parity`'s blame ends in a verified fix: a model with one deliberately damaged layer
fails int8 parity; blame names that layer; the fix (that layer kept in float) is converted, checked
on the same images and timed. The report's last element is the fix, and its 'after' agreement is
what an independent parity run of the fixed file gives."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from cli import cli

TARGET = "blocks.2.0.conv_pwl"   # a 1x1 projection conv in the middle of MixNet-S
IMAGES = "200"
GATE = ["--min-top1-agreement", "0.9", "--max-top1-drop", "5"]


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def damaged_checkpoint(checkpoint, out):
    """The checkpoint with one layer int8 cannot represent, the float function almost unchanged:
    one input channel of TARGET is made exactly zero (its BatchNorm's weight and bias set to 0,
    so swish and the SE gate keep it 0), and TARGET's weights on that channel are made 1000x the
    largest. In float they multiply zeros; in int8 each output channel's weight scale grows 1000x
    and every other weight of TARGET rounds to 0."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = saved["state_dict"]
    channel = 0
    state["blocks.2.0.bn2.weight"][channel] = 0
    state["blocks.2.0.bn2.bias"][channel] = 0
    weight = state[f"{TARGET}.weight"]
    weight[:, channel] = 1000 * weight.abs().max()
    torch.save(saved, out)
    return out


@pytest.fixture(scope="module")
def damaged(trained_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    checkpoint = damaged_checkpoint(trained_checkpoint, root / "damaged.pt")
    export = root / "export"
    made = run_cli("export", checkpoint, "--int8", "--calib", "fashion-mnist", "--calib-count", 32,
                   "--parity-count", 32, "--lowering", "split", "-o", export, "--json")
    assert made.exit_code == 0, made.output
    report = root / "report"
    gated = run_cli("parity", checkpoint, "--tflite", export / "model_int8.tflite", "--data", "fashion-mnist",
                    "--limit", IMAGES, "--calibration-count", 32, "--blame-images", 8, "--report", report,
                    "--json", *GATE)
    return {"checkpoint": checkpoint, "export": export, "report": report, "gated": gated}


def test_blame_names_the_damaged_layer_and_ends_in_its_verified_fix(damaged):
    gated = damaged["gated"]
    assert gated.exit_code == 1, gated.output          # the damaged int8 model fails the gate
    result = json.loads(gated.stdout)
    blame = result["blame"]
    assert TARGET in blame["layers"][0]["onnx_nodes"]
    assert list(blame)[-1] == "fix"                     # the JSON report ends in the fix ...
    fix = blame["fix"]
    print("\n" + fix["summary"])
    assert TARGET in fix["keep_float"]
    assert fix["before"]["top1_agreement"] == result["backends"][0]["top1_agreement"]
    assert fix["after"]["top1_agreement"] > fix["before"]["top1_agreement"] + 0.2
    assert fix["passed"] is True and "passes the gate" in fix["summary"]
    assert fix["candidate"]["latency_ms"] > 0 and fix["baseline"]["latency_ms"] > 0
    assert fix["candidate"]["file_size"] > fix["baseline"]["file_size"]   # float weights take more bytes
    # ... and so do blame.json and the Markdown report
    assert list(json.loads((damaged["report"] / "blame.json").read_text()))[-1] == "fix"
    markdown = (damaged["report"] / "parity.md").read_text().rstrip()
    assert markdown.splitlines()[-1] == "**Verified fix:** " + fix["summary"]


def test_the_fix_agreement_is_what_an_independent_parity_run_of_the_fixed_file_gives(damaged):
    fix = json.loads(damaged["gated"].stdout)["blame"]["fix"]
    fixed = damaged["report"] / "model_int8_keepfloat.tflite"
    assert fix["path"] == str(fixed) and fixed.is_file()
    again = run_cli("parity", damaged["checkpoint"], "--tflite", fixed, "--data", "fashion-mnist",
                    "--limit", IMAGES, "--no-blame", "--json", *GATE)
    assert again.exit_code == 0, again.output
    backend = json.loads(again.stdout)["backends"][0]
    assert backend["top1_agreement"] == fix["after"]["top1_agreement"]
    assert backend["top1_drop_points"] == fix["after"]["top1_drop_points"]


def test_table_output_ends_in_the_fix_before_the_verdict(damaged, monkeypatch):
    from mixdeploy import parity

    ran, real_timed_run = [], parity._timed_run
    monkeypatch.setattr(parity, "_timed_run", lambda runner, *a: ran.append(runner.name) or real_timed_run(runner, *a))
    gated = run_cli("parity", damaged["checkpoint"], "--tflite", damaged["export"] / "model_int8.tflite",
                    "--data", "fashion-mnist", "--limit", 50, "--calibration-count", 16, "--blame-images", 4,
                    "--no-progress", *GATE)
    assert gated.exit_code == 1, gated.output
    lines = [line for line in gated.output.splitlines() if line.strip()]
    assert lines[-1] == "parity: FAIL"
    fix_line = next(i for i, line in enumerate(lines) if line.startswith(("verified fix", "fix tried")))
    assert "keep " in lines[fix_line] and "agreement" in lines[fix_line] and " ms" in lines[fix_line]
    assert "not kept" in " ".join(lines[fix_line:-1])    # no --report, no --keep-float: nothing written
    assert not list(damaged["export"].glob("*_keepfloat.tflite"))
    # the fix is checked against the first run's PyTorch logits: the reference ran once, each model once
    assert len(ran) == 3 and len(set(ran)) == 3, ran


def test_blame_and_its_fix_use_the_exports_recipe(trained_checkpoint, tmp_path, monkeypatch):
    """An export made with a non-default int8 recipe: blame calibrates and the fix converts with
    that recipe (read from the manifest), so the before -> after comparison is one recipe's."""
    from mixdeploy import blame
    from mixdeploy.tflite import convert

    export = tmp_path / "export"
    made = run_cli("export", trained_checkpoint, "--int8", "--calib", "fashion-mnist", "--calib-count", 16,
                   "--parity-count", 16, "--lowering", "split", "--quant-recipe", "avgminmax", "-o", export)
    assert made.exit_code == 0, made.output
    seen = {"blame": [], "fix": []}
    real_get_recipe, real_convert = blame.get_recipe, convert.convert_onnx
    monkeypatch.setattr(blame, "get_recipe", lambda r: seen["blame"].append(r) or real_get_recipe(r))
    monkeypatch.setattr(convert, "convert_onnx",
                        lambda *a, **k: seen["fix"].append(k.get("recipe")) or real_convert(*a, **k))
    gated = run_cli("parity", trained_checkpoint, "--tflite", export / "model_int8.tflite", "--data", "fashion-mnist",
                    "--limit", 32, "--calibration-count", 16, "--blame-images", 4, "--keep-float", "auto",
                    "--report", tmp_path / "report", "--json")
    assert gated.exit_code in (0, 1), gated.output
    assert seen["blame"] == ["avgminmax"] and seen["fix"] == ["avgminmax"], seen
