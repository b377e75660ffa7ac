"""Host benchmark (LiteRT + onnxruntime/PyTorch baselines) on tiny models: structure and behaviour."""

from __future__ import annotations

import pytest
import torch

from bench_tiny_model import build_tiny_tflite
from mixdeploy.bench.host import bench_host
from mixdeploy.errors import MixdeployError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_tflite(tmp_path_factory.mktemp("host") / "tiny.tflite")


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    return build_tiny_tflite(tmp_path_factory.mktemp("host8") / "tiny_int8.tflite", int8=True)


def test_litert_results_are_sane_and_xnnpack_really_toggles(tiny):
    on = bench_host(tiny, threads=[1, 2], runs=7, warmup=2)
    assert [(c.runtime, c.threads, c.xnnpack) for c in on.configs] == [("litert", 1, True), ("litert", 2, True)]
    assert on.input_shape == [1, 16, 16, 3] and on.input_dtype == "float32"
    for c in on.configs:
        assert c.runs == len(c.samples_ms) == 7
        assert 0 < c.min_ms <= c.median_ms <= c.p90_ms <= max(c.samples_ms)
        assert c.init_ms > 0 and c.peak_rss_delta_mb is not None and c.peak_rss_delta_mb >= 0
        assert c.delegate_nodes >= 1                  # XNNPACK took the graph
    off = bench_host(tiny, threads=[1], runs=3, warmup=0, use_xnnpack=False)
    assert off.configs[0].xnnpack is False and off.configs[0].delegate_nodes == 0
    assert "samples_ms" not in off.to_dict()["configs"][0]


def test_int8_model_gets_int8_input(tiny_int8):
    result = bench_host(tiny_int8, threads=[1], runs=3, warmup=1)
    assert result.input_dtype == "int8" and result.configs[0].median_ms > 0


class ThreadRecorder(torch.nn.Module):
    """Records torch's thread setting at each call: shows which config ran, in which order."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(torch.get_num_threads())
        return self.conv(x)


def test_runs_are_interleaved_across_configs_and_baselines_run(tiny, tmp_path):
    recorder = ThreadRecorder()
    onnx_path = tmp_path / "tiny.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 4, 3), torch.zeros(1, 3, 16, 16), str(onnx_path), dynamo=False)
    result = bench_host(tiny, threads=[1, 2], runs=4, warmup=1, baselines=("onnxruntime", "torch"),
                        onnx_path=onnx_path, torch_module=recorder)
    assert [(c.runtime, c.threads) for c in result.configs] == [
        ("litert", 1), ("onnxruntime", 1), ("torch", 1), ("litert", 2), ("onnxruntime", 2), ("torch", 2)]
    # warm-up per config first (1, then 2), then one run of each config per round
    assert recorder.calls == [1, 2] + [1, 2] * 4
    assert all(c.median_ms > 0 for c in result.configs)


def test_user_errors(tiny, tmp_path):
    with pytest.raises(MixdeployError, match="does not exist"):
        bench_host(tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 10)
    with pytest.raises(MixdeployError, match="not a valid TFLite model"):
        bench_host(bad)
    with pytest.raises(MixdeployError, match="--onnx"):
        bench_host(tiny, baselines=("onnxruntime",))


def test_cli_host_bench_json_and_plot(tiny, tiny_int8, tmp_path):
    import json

    from click.testing import CliRunner

    from cli import cli

    for path, macs in ((tiny, 117_000), (tiny_int8, 117_000)):
        (path.parent / "manifest.json").write_text(json.dumps({"model": {"name": path.stem, "macs": macs}}))
    plot = tmp_path / "latency.png"
    result = CliRunner().invoke(cli, ["bench", str(tiny), str(tiny_int8), "--device", "host", "--threads", "1",
                                      "--runs", "3", "--warmup", "1", "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert [r["input_dtype"] for r in payload["results"]] == ["float32", "int8"]
    assert [(row["macs"], row["within_budget"]) for row in payload["table"]] == [(117_000, True)] * 2
    assert plot.stat().st_size > 0
    bad = CliRunner().invoke(cli, ["bench", str(tiny), "--threads", "0"])
    assert bad.exit_code == 2 and "comma-separated" in bad.output
    misplaced = CliRunner().invoke(cli, ["bench", str(tiny), "--op-profile"])
    assert misplaced.exit_code == 2 and "--op-profile only applies to a phone" in misplaced.output


def _load_host_latency_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "host_latency.py"
    spec = importlib.util.spec_from_file_location("host_latency", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_host_latency_script_on_exported_folders(tiny, tiny_int8, tmp_path, capsys):
    """benchmarks/host_latency.py reuses exported folders and prints ratios (tiny stand-ins)."""
    import json
    import shutil

    script = _load_host_latency_script()
    folder = tmp_path / "out" / "tiny-16"
    folder.mkdir(parents=True)
    shutil.copy(tiny, folder / "model_fp32.tflite")
    shutil.copy(tiny_int8, folder / "model_int8.tflite")
    (folder / "manifest.json").write_text(json.dumps({"model": {"name": "tiny", "macs": 117_000}}))
    assert script.main(["--models", "tiny", "--input-size", "16", "--runs", "3", "--warmup", "1",
                        "--out", str(tmp_path / "out"), "--json", str(tmp_path / "r.json")]) == 0
    numbers = json.loads((tmp_path / "r.json").read_text())["results"]["tiny"]
    assert numbers["macs"] == 117_000 and numbers["by_threads"]["1"]["int8"] > 0
    assert "int8 speed-up" in capsys.readouterr().out


@pytest.mark.slow
def test_host_latency_script_exports_mixnet_s_at_64px(tmp_path):
    script = _load_host_latency_script()
    assert script.main(["--models", "mixnet-s", "--input-size", "64", "--runs", "2", "--warmup", "1",
                        "--calib-count", "4", "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    import json
    facts = json.loads((tmp_path / "r.json").read_text())["results"]["mixnet-s"]
    # MixNet-S is ~256M MACs at 224: at 64 px about (64/224)^2 of that
    assert 15e6 < facts["macs"] < 30e6
