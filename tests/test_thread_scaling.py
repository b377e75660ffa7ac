"""benchmarks/thread_scaling.py: the per-class table from made-up profiles (the profiling itself
times every op at two thread counts: not run in CI), and the two-copies run on a tiny model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench_tiny_model import build_tiny_tflite
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


def test_the_copies_line_gives_combined_throughput_against_the_threaded_run():
    copies = thread_scaling.Copies(copies=2, alone_ms=10.0, together_ms=12.5, threaded_ms=6.25, overlapped=True)
    assert copies.throughput == pytest.approx(1.6)          # 2 x 10 ms of work in 12.5 ms
    assert copies.threaded_speedup == pytest.approx(1.6)
    line = thread_scaling.copies_line(copies)
    assert "**x1.60**" in line and "(100% of what the copies got)" in line and "warning" not in line
    assert "warning" in thread_scaling.copies_line(thread_scaling.Copies(2, 10.0, 12.5, 6.25, False))


def test_two_copies_run_at_once_in_their_own_processes_and_are_gone_after(tmp_path):
    import multiprocessing

    model = build_tiny_tflite(tmp_path / "tiny.tflite", int8=True)
    copies = thread_scaling.parallel_copies(model, rounds=2, seconds_per_round=0.05)
    # overlapped: every round's two invoke loops shared a moment (run one after the other, they
    # would not), and each ran real invokes
    assert copies.overlapped
    assert copies.alone_ms > 0 and copies.together_ms > 0 and copies.threaded_ms > 0
    assert not multiprocessing.active_children()


def test_a_model_the_workers_cannot_load_is_an_error_not_a_hang(tmp_path):
    import multiprocessing

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises((EOFError, ConnectionError)):
        thread_scaling.parallel_copies(broken, rounds=1, seconds_per_round=0.01)
    assert not multiprocessing.active_children()
