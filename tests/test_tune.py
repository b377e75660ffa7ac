"""`mixdeploy tune` and `export --tuned-for`: per-layer lowerings chosen on the device that runs them.

The phone is the emulated one (tests/adb_emulator.py) behind a private adb server; its
benchmark_model stand-in prints the real op-profile format (XNNPACK `Delegate/...` rows that
name no tensor) with per-op times from a cost table the test writes, so the test knows which
lowering of each layer is fastest on this "phone" without asking the code under test:

  depthwise ms per channel: 3x3 0.001, 5x5 0.002, 7x7 0.05 (slow natively), 9x9 and 11x11 0.0012
  (fast natively on this phone), any other shape (a decomposed piece) 0.003; every other row 0.002.

For a MixConv with C channels per group that makes, whatever the feature-map size:
  {3,5}:       split C*0.003 + 2 rows  <  pad 2C*0.002                      -> split
  {3,5,7}:     decompose <= C*(0.003 + 3*0.003) + rows  <<  split C*0.053     -> decompose
  {3,5,7,9}:   pad 4C*0.0012  <  decompose >= C*0.009, split C*0.054          -> pad
  {3,5,7,9,11}: pad 5C*0.0012 < decompose >= C*0.009, split C*0.104          -> pad
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from adb_emulator import ADB_CANDIDATES, AdbLab
from cli import cli
from mixdeploy.bench import twin
from mixdeploy.manifest import sha256_file
from mixdeploy.onnx import policy
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec
from mixdeploy.onnx.rewrite import rewrite
from mixdeploy.tune import choose_per_signature, revert_until_parity
from rewrite_helpers import GraphBuilder

FAKE_TOOL = Path(__file__).parent / "data" / "fake_benchmark_model.py"
OP_COSTS = {"depthwise_ms_per_channel": {"3x3": 0.001, "5x5": 0.002, "7x7": 0.05, "9x9": 0.0012,
                                         "11x11": 0.0012, "default": 0.003},
            "other_ms": 0.002}
EXPECTED_BY_KERNELS = {(3, 5): "split", (3, 5, 7): "decompose", (3, 5, 7, 9): "pad", (3, 5, 7, 9, 11): "pad"}

needs_adb = pytest.mark.skipif(not Path(ADB_CANDIDATES[0]).exists(), reason="needs Debian's adb")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    monkeypatch.delenv("MIXDEPLOY_BENCHMARK_MODEL", raising=False)
    monkeypatch.setenv(twin.TWIN_ENV, str(twin.twin_dir()))
    (tmp_path / "lab").mkdir()
    lab = AdbLab(tmp_path / "lab", ADB_CANDIDATES[0])
    for key in ("ANDROID_ADB_SERVER_PORT", "HOME"):
        monkeypatch.setenv(key, lab.env[key])
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def fake_tool(tmp_path):
    import sys

    path = tmp_path / "benchmark_model"
    path.write_text(f"#!{sys.executable}\n" + FAKE_TOOL.read_text())
    path.chmod(0o755)
    return path


def run_cli(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def seed_host_auto(checkpoint, precision: str, choice_for) -> dict[str, str]:
    """The host `auto` cache, as if measured: its choices are the test's (host timing is not under test)."""
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx

    loaded = load_model(str(checkpoint))
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(loaded.module, loaded.preprocessing.input_size, Path(tmp) / "m.onnx")
        specs = [MixConvSpec(**m) for m in rewrite(onnx.load(Path(tmp) / "m.onnx"), lowering="split").report.mixconvs]
    cache = {s.signature: {"choice": choice_for(s), "ms": {}, "layer": s.name} for s in specs}
    policy.save_cache(policy.runtime_id(precision), cache)
    return {s.name: choice_for(s) for s in specs}


def kernel_set(layer) -> tuple:
    return tuple(layer["kernels"])


def ops_in_scope(tflite_path, scope: str) -> list[tuple[str, tuple]]:
    """(op name, weight shape) of every op whose output tensor carries `scope` (the test's own reading)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():
        parts = [p for i in op["outputs"] for p in tensors[i]["name"].split(";")]
        if any(p.startswith((scope + "/", scope + ".")) for p in parts):
            shape = tuple(tensors[op["inputs"][1]]["shape"]) if op["op_name"] == "DEPTHWISE_CONV_2D" else ()
            found.append((op["op_name"], shape))
    return found


@needs_adb
@pytest.mark.slow
def test_tune_on_the_phone_picks_what_its_profile_makes_fastest_and_export_ships_it(
        lab, fake_tool, cache, tmp_path, trained_checkpoint):
    dev = lab.add("pixel", model="Pixel 7")
    (dev.sandbox / "op_costs.json").write_text(json.dumps(OP_COSTS))
    host_auto = seed_host_auto(trained_checkpoint, "int8",
                               lambda s: "decompose" if max(k[0] for k in s.kernels) > 5 else "split")
    out = tmp_path / "tune-out"
    result = run_cli("tune", trained_checkpoint, "--device", "pixel", "--precision", "int8", "--calib", "fashion-mnist",
                     "--calib-count", 16, "--parity-count", 4, "--runs", 3, "--benchmark-binary", fake_tool,
                     "-o", out, "--json")
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)

    # per layer: what the cost table makes fastest
    assert len(tuned["layers"]) == 13
    for layer in tuned["layers"]:
        assert layer["choice"] == EXPECTED_BY_KERNELS[kernel_set(layer)], layer
    # the split time of a {3,5} layer, read back from the profile through the attribution:
    # 120 ch x (0.001 + 0.002) + an Even Split row + a Concatenate row
    layer_21 = next(layer for layer in tuned["layers"] if layer["name"] == "blocks.2.1.conv_dw")
    assert layer_21["ms"]["split"] == pytest.approx(120 * 0.003 + 2 * 0.002, abs=0.0025)
    assert set(layer_21["ms"]) == {"split", "pad"}           # decompose of a 3/5 layer is no new graph
    # end to end: the modelled phone's timings are the sums of its op costs
    e2e = tuned["end_to_end_ms"]
    assert e2e["tuned"] < e2e["host-auto"] < e2e["split"]
    assert tuned["gain_vs_split"] == pytest.approx(e2e["split"] / e2e["tuned"])
    assert tuned["parity"]["device_vs_host_top1"] >= 0.98 and tuned["parity"]["tuned_vs_split_top1"] >= 0.98
    assert tuned["notes"][-1] == "host auto chose: 8 decompose, 5 split"     # the seeded host cache, applied

    # saved under the phone's fingerprint
    fingerprint = tuned["fingerprint"]
    assert (fingerprint["ro.product.model"], fingerprint["ro.board.platform"], fingerprint["precision"]) == \
        ("Pixel 7", "gs201", "int8")
    assert fingerprint["benchmark_model_sha256"] == sha256_file(fake_tool)
    assert fingerprint["runtime"] == "benchmark_model-xnnpack-2t"
    saved = json.loads(Path(tuned["tune_file"]).read_text())
    assert Path(tuned["tune_file"]).parent == cache / "tuned"
    assert {entry["layer"]: entry["choice"] for entry in saved["choices"].values()} == \
        {n: c for n, c in tuned["choices"].items() if n in {e["layer"] for e in saved["choices"].values()}}
    assert (out / "tune.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the phone is left with its cached tool only
    assert not list(dev.host_path("data").rglob("*.tflite"))
    assert not list(dev.host_path("data/local/tmp/mixdeploy").glob("run-*"))

    # export --tuned-for: the manifest says which lowering each layer got, and the model has it
    exported = tmp_path / "export"
    result = run_cli("export", trained_checkpoint, "--int8", "--calib", "fashion-mnist", "--calib-count", 16,
                     "--parity-count", 20, "--tuned-for", "pixel", "-o", exported, "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["stages"]["rewrite"]["lowering_choices"] == tuned["choices"]
    assert manifest["tuned"]["from_tune"] == tuned["choices"] and manifest["tuned"]["measured_here"] == []
    assert manifest["tuned"]["fingerprint"]["ro.product.model"] == "Pixel 7"
    model = exported / "model_int8.tflite"
    assert sha256_file(model) == sha256_file(out / "variant_tuned.tflite")    # what was measured is what ships
    pad_layer = ops_in_scope(model, "blocks.4.1.conv_dw")
    assert [s for op, s in pad_layer if op == "DEPTHWISE_CONV_2D"] == [(1, 9, 9, 360)]   # one padded 9x9
    assert "SPLIT" not in [op for op, _ in pad_layer]
    assert "STRIDED_SLICE" in [op for op, _ in ops_in_scope(model, "blocks.2.0.conv_dw")]  # decomposed 7x7
    assert "SPLIT" in [op for op, _ in ops_in_scope(model, "blocks.2.1.conv_dw")]          # kept split
    assert host_auto["blocks.4.1.conv_dw"] == "decompose"      # the host would have shipped another graph


def test_choices_per_signature_sum_their_layers():
    def spec(name, kernels):
        return MixConvSpec(name=name, channels=[4] * len(kernels), kernels=[[k, k] for k in kernels], strides=[1, 1],
                           pads=[[k // 2] * 4 for k in kernels], dilations=[1, 1], input_hw=[8, 8], output_hw=None)

    a, b, c = spec("a", (3, 7)), spec("b", (3, 7)), spec("c", (3, 5))
    # a and b share a shape: their times add up (b's noise does not flip the pair's choice)
    per_layer = {"a": {"split": 5.0, "decompose": 1.0}, "b": {"split": 1.0, "decompose": 1.1},
                 "c": {"split": 1.0, "pad": 1.03}}
    assert choose_per_signature([a, b, c], per_layer) == {a.signature: "decompose", c.signature: "split"}


def test_parity_fallback_reverts_least_gain_first():
    checked = []

    def holds(choices):
        checked.append(dict(choices))
        return choices["big"] == "split"         # the big layer's lowering breaks parity

    final, reverted = revert_until_parity({"big": "decompose", "small": "pad", "same": "split"},
                                          {"big": 5.0, "small": 0.1}, holds)
    assert reverted == ["small", "big"] and final == {"big": "split", "small": "split", "same": "split"}
    assert len(checked) == 3


def single_mixconv_onnx(path: Path) -> Path:
    """A BYO ONNX graph (generic node names): 1x1 conv, one {3,9} MixConv, global pool, flatten."""
    g = GraphBuilder(channels=3, hw=16)
    y = g.mixconv(g.conv("x", 3, 16, 1), [8, 8], [3, 9])
    pooled = g.node("GlobalAveragePool", [y])
    flat = g.node("Flatten", [pooled], axis=1)
    graph = helper.make_graph(g.nodes, "byo", [helper.make_tensor_value_info("x", TensorProto.FLOAT, g.shape)],
                              [helper.make_tensor_value_info(flat, TensorProto.FLOAT, [1, 16])], g.inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_tune_on_the_host_then_export_tuned_for_host(cache, tmp_path):
    source = single_mixconv_onnx(tmp_path / "byo.onnx")
    result = run_cli("tune", source, "--device", "host", "--precision", "fp32", "--runs", 5, "--json")
    assert result.exit_code == 0, result.output
    tuned = json.loads(result.stdout)
    [layer] = tuned["layers"]
    assert layer["kernels"] == [3, 9] and set(layer["ms"]) == {"split", "pad", "decompose", "pad_decompose"}
    assert layer["choice"] == policy.pick_fastest(layer["ms"])
    assert tuned["fingerprint"]["kind"] == "host" and set(tuned["end_to_end_ms"]) == {"split", "host-auto", "tuned"}
    result = run_cli("export", source, "--tuned-for", "host", "--format", "onnx", "-o", tmp_path / "exp", "--json")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["stages"]["rewrite"]["lowering_choices"] == tuned["choices"]
    assert manifest["tuned"]["from_tune"] == tuned["choices"]


def test_tuned_for_mistakes_are_explained(cache, tmp_path):
    source = single_mixconv_onnx(tmp_path / "byo.onnx")
    result = run_cli("export", source, "--tuned-for", "pixel", "--format", "onnx", "-o", tmp_path / "a")
    assert result.exit_code == 2 and "no tuning for 'pixel' (fp32)" in result.output
    assert "mixdeploy tune MODEL --device pixel --precision fp32" in result.output
    result = run_cli("export", source, "--tuned-for", "pixel", "--lowering", "split", "--format", "onnx",
                     "-o", tmp_path / "b")
    assert result.exit_code == 2 and "drop --lowering split" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = run_cli("export", source, "--tune-file", bad, "--format", "onnx", "-o", tmp_path / "c")
    assert result.exit_code == 2 and "is not a tune file" in result.output
    result = run_cli("tune", source, "--device", "host", "--precision", "fp16")
    assert result.exit_code == 2 and "Traceback" not in result.output
