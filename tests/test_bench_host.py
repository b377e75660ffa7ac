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
