"""benchmarks/latency_224.py's table: ratios, goals and op-count change from made-up timings
(the benchmark itself converts with every peer and takes many minutes: not run in CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import latency_224 as bench  # noqa: E402


def timings(ours_1=10.0, ours_2=5.0):
    return {bench.OURS: {"1": ours_1, "2": ours_2}, bench.OURS_FP32: {"1": 16.0, "2": 9.0},
            bench.ORT_FP32: {"1": 20.0, "2": 12.0},
            "onnx2tf int8": {"1": 50.0, "2": 30.0}, "executorch int8": {"1": 40.0, "2": 40.0}}


def test_ratios_and_goals_from_the_medians_and_the_profile():
    row = bench.summarise_model(timings(), {"whole_ms": 9.0, "roofline_ms": 6.0, "data_floor_ms": 3.0,
                                             "floor_ms": 9.0},
                                {"litert-torch": "Killed"})
    assert row["speedup_1_to_2"] == pytest.approx(2.0)
    assert row["whole_over_roofline"] == pytest.approx(1.5)          # profile's whole over its roofline
    assert row["whole_over_floor"] == pytest.approx(1.0)             # ... over roofline + data floor
    assert row["best_peer"] == "executorch"                           # fastest peer at 1 thread, not at 2
    assert row["best_peer_ratio"] == pytest.approx(10 / 40)
    assert row["peers"]["onnx2tf"]["ratio_2"] == pytest.approx(5 / 30)
    assert row["peers"]["litert-torch"] == {"error": "Killed"}        # a failed peer stays a row
    assert "onnxruntime-qdq" not in row["peers"]                      # skipped: no row
    assert row["ort_fp32_ratio"] == pytest.approx(0.5)
    assert row["goals_met"] == {"whole_over_roofline": True, "speedup_1_to_2": True, "best_peer_ratio": True,
                                "ort_fp32_ratio": True}


def test_goals_fail_when_the_numbers_miss_them_and_are_unknown_without_data():
    slow = bench.summarise_model(timings(ours_1=30.0, ours_2=20.0), {"whole_ms": 9.1, "roofline_ms": 6.0}, {})
    assert slow["goals_met"] == {"whole_over_roofline": False, "speedup_1_to_2": False, "best_peer_ratio": False,
                                 "ort_fp32_ratio": False}
    every_peer_failed = bench.summarise_model({bench.OURS: {"1": 10.0, "2": 6.0}}, {"whole_ms": 9.0, "roofline_ms": None},
                                              {p: "failed" for p in bench.PEERS})
    assert every_peer_failed["best_peer"] is None and every_peer_failed["best_peer_ratio"] is None
    assert every_peer_failed["goals_met"]["best_peer_ratio"] is None
    assert every_peer_failed["goals_met"]["whole_over_roofline"] is None  # no roofline: unknown, not met


def test_op_count_change_covers_ops_of_either_graph_and_the_total():
    change = bench.op_count_change({"CONV_2D": 80, "SPLIT": 34, "MUL": 86}, {"CONV_2D": 59, "STRIDED_SLICE": 50, "MUL": 86})
    assert change == {"CONV_2D": [80, 59, -21], "MUL": [86, 86, 0], "SPLIT": [34, 0, -34],
                      "STRIDED_SLICE": [0, 50, 50], "total": [200, 195, -5]}


def test_the_markdown_shows_failures_and_missed_goals():
    latency = timings(ours_1=30.0, ours_2=20.0)
    profile = {"whole_ms": 9.1, "roofline_ms": 6.0, "classes": []}
    host = {"cpu": "Test CPU", "nproc": 2, "niceness": 5, "ai_edge_litert": "x", "loadavg_1_5_15": [1.0, 2.0, 3.0]}
    report = {"input_size": 224, "runs": 5, "wall_seconds": 60, "peer_versions": {}, "host_start": host,
              "host_end": {**host, "loadavg_1_5_15": [4.0, 5.0, 6.0]},
              "models": {"mixnet-m": {"weights": "seeded", "export_seconds": 40.0,
                                      "peer_convert_seconds": {"onnx2tf": 300.0, "executorch": 200.0},
                                      "latency_ms": latency, "fastest_round_ms": latency, "profile": profile,
                                      "op_count_change": bench.op_count_change({"PAD": 13}, {"PAD": 22}),
                                      "summary": bench.summarise_model(latency, profile, {"litert-torch": "OOM | killed"})}}}
    markdown = bench.render_markdown(report)
    assert "failed: OOM / killed" in markdown                      # the failure, table-safe
    assert "1.50x ✗" in markdown and "0.75x ✗" in markdown          # speed-up 30/20 and ours/best peer 30/40
    assert "1/2/3 at start, 4/5/6 at end" in markdown.replace(".0", "")
    assert "| PAD | 13 -> 22 (+9) |" in markdown
