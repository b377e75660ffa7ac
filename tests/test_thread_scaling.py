"""benchmarks/thread_scaling.py's per-class table from made-up profiles (the profiling itself
times every op at two thread counts: not run in CI)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mixdeploy.bench.profile import ClassTime, ProfileResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import thread_scaling  # noqa: E402


def profile(threads, ms_by_class):
    classes = [ClassTime(name, 2, ms, 0) for name, ms in ms_by_class.items()]
    return ProfileResult("m.tflite", "host", threads, sum(ms_by_class.values()), [], classes)


def test_per_class_speedup_share_and_the_amdahl_bound():
    one = profile(1, {"pointwise": 3.0, "elementwise": 1.0})
    two = profile(2, {"pointwise": 1.5, "elementwise": 1.0})
    rows = {r["class"]: r for r in thread_scaling.scaling_rows(one, two)}
    assert rows["pointwise"]["speedup"] == pytest.approx(2.0)
    assert rows["elementwise"]["speedup"] == pytest.approx(1.0)
    assert rows["pointwise"]["share"] == pytest.approx(0.75)
    # every class at the best one's 2.0x: the sum of ops halves
    assert thread_scaling.if_all_scaled_like_best(list(rows.values())) == pytest.approx(2.0)
    text = thread_scaling.markdown("out/m.tflite", one, two, list(rows.values()))
    assert "**1.60x**" in text            # whole 4.0 -> 2.5 ms
    assert "| elementwise | 2 | 1.000 | 1.000 | 1.00x | 25% |" in text


def test_a_class_missing_at_two_threads_has_no_ratio():
    one = profile(1, {"pointwise": 3.0, "SE": 1.0})
    two = profile(2, {"pointwise": 1.5})
    rows = {r["class"]: r for r in thread_scaling.scaling_rows(one, two)}
    assert rows["SE"]["speedup"] is None and rows["SE"]["ms_2"] is None
    assert "| SE | 2 | 1.000 | - | - | 25% |" in thread_scaling.markdown("m.tflite", one, two, list(rows.values()))
