"""Latency-vs-MACs report: MACs from manifest.json, budget flag, plot file."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from mixdeploy.bench.host import HostBenchResult, HostConfigResult
from mixdeploy.bench.report import MAC_BUDGET, latency_table, macs_for, plot_latency_vs_macs, rows_from_host
from mixdeploy.errors import MixdeployError


def fake_host_result(path, median):
    config = HostConfigResult(runtime="litert", threads=1, xnnpack=True, init_ms=1.0, median_ms=median,
                              p90_ms=median * 1.1, min_ms=median * 0.9, mean_ms=median, runs=5,
                              peak_rss_delta_mb=1.0)
    return HostBenchResult(model_path=str(path), input_shape=[1, 8, 8, 3], input_dtype="float32",
                           configs=[config], host={})


def test_rows_table_and_plot(tmp_path):
    small, large = tmp_path / "s" / "model_int8.tflite", tmp_path / "l" / "model_int8.tflite"
    for path, macs, name in ((small, 256_000_000, "mixnet_s"), (large, 720_000_000, "mixnet_l")):
        path.parent.mkdir()
        path.write_bytes(b"")
        (path.parent / "manifest.json").write_text(json.dumps({"model": {"name": name, "macs": macs}}))
    orphan = tmp_path / "orphan.tflite"
    orphan.write_bytes(b"")
    assert macs_for(small) == 256_000_000 and macs_for(orphan) is None
    rows = [*rows_from_host(fake_host_result(small, 20.0)), *rows_from_host(fake_host_result(large, 60.0)),
            *rows_from_host(fake_host_result(orphan, 5.0))]
    assert [(r.label, r.within_budget) for r in rows] == [
        ("mixnet_s/model_int8.tflite", True), ("mixnet_l/model_int8.tflite", False), ("orphan.tflite", None)]
    assert rows[0].ms_per_gmac == pytest.approx(20.0 / 0.256)
    assert MAC_BUDGET == 600_000_000
    assert latency_table(rows).row_count == 3
    png = plot_latency_vs_macs(rows, tmp_path / "plots" / "latency.png")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.width > 300
    assert not list((tmp_path / "plots").glob("*.part"))
    with pytest.raises(MixdeployError, match="no MACs known"):
        plot_latency_vs_macs(rows[2:], tmp_path / "none.png")
