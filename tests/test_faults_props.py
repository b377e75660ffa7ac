"""Property-based tests (hypothesis): what mixdeploy reads from outside - benchmark_model's text,
ONNX files, TFLite files - never raises anything but a MixdeployError, however damaged it is.

The inputs are mutations of real ones (the benchmark_model logs in tests/data, a tiny ONNX
classifier, a tiny TFLite model): lines dropped, doubled or cut, numbers replaced by nan / inf /
text, bytes flipped, inserted, deleted, files cut short. A clean result must be a sane one
(finite, non-negative timings). Examples are derandomized: CI sees the same cases every run.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench_tiny_model import build_tiny_tflite
from mixdeploy.bench.parse import BenchmarkParseError, parse_benchmark_output
from mixdeploy.errors import MixdeployError
from model_support import tiny_classifier

SAMPLES = sorted((Path(__file__).parent / "data" / "benchmark_model_samples").glob("*.txt"))


def fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
ODD_NUMBERS = ["nan", "inf", "-inf", "-1", "1e999", "", "abc", "0", "-0.5", "99999999999999999999", "1,5"]
NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


# ---------------------------------------------------------------- benchmark_model output

@st.composite
def damaged_logs(draw) -> str:
    """A real benchmark_model log with line-level damage, or arbitrary text."""
    import re

    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=400))
    lines = draw(st.sampled_from(SAMPLES)).read_text().splitlines()
    for _ in range(draw(st.integers(1, 6))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "double", "cut", "number", "insert", "tabs"]))
        if action == "drop":
            del lines[i]
        elif action == "double":
            lines.insert(i, lines[i])
        elif action == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif action == "number":
            numbers = list(re.finditer(NUMBER, lines[i]))
            if numbers:
                m = draw(st.sampled_from(numbers))
                lines[i] = lines[i][:m.start()] + draw(st.sampled_from(ODD_NUMBERS)) + lines[i][m.end():]
        elif action == "insert":
            lines.insert(i, draw(st.text(max_size=60)))
        else:
            lines[i] = lines[i].replace(" ", "\t")
    text = "\n".join(lines)
    return text[: draw(st.integers(0, len(text)))] if draw(st.booleans()) else text


def _sane_ms(value) -> bool:
    return value is None or (math.isfinite(value) and value >= 0)


@fuzz(300)
@given(damaged_logs())
def test_the_benchmark_parser_returns_sane_timings_or_a_clear_error(text):
    try:
        out = parse_benchmark_output(text)
    except BenchmarkParseError as err:
        assert isinstance(err, MixdeployError) and isinstance(err, ValueError) and str(err)
        return
    assert out.inference is not None and math.isfinite(out.inference.avg_ms) and out.inference.avg_ms >= 0
    for stats in (out.inference, out.warmup):
        if stats is not None:
            assert all(_sane_ms(getattr(stats, name)) for name in vars(stats) if name.endswith("_ms"))
    assert all(_sane_ms(v) for v in (out.init_ms, out.first_inference_ms, out.median_ms))
    assert all(math.isfinite(row.avg_ms) and row.avg_ms >= 0 for row in out.op_profile)


@fuzz(100)
@given(st.lists(st.floats(0, 1e7, allow_nan=False), min_size=6, max_size=6), st.integers(1, 10_000),
       st.booleans(), st.booleans())
def test_the_benchmark_parser_reads_back_the_numbers_a_classic_run_prints(us, count, prefixed, percentiles):
    """An independent reference: the log is written here from known numbers (microseconds)."""
    first, curr, low, high, avg, std = (round(v, 2) for v in us)
    line = f"count={count} first={first} curr={curr} min={low} max={high} avg={avg} std={std}"
    if percentiles:
        line += f" p5={low} median={avg} p95={high}"
    prefix = "INFO: " if prefixed else ""
    text = "\n".join([f"{prefix}count=3 first=1 curr=1 min=1 max=1 avg=1 std=0", f"{prefix}{line}",
                      f"{prefix}Inference timings in us: Init: 500, First inference: {first}"])
    out = parse_benchmark_output(text)
    assert out.inference.count == count and out.warmup.count == 3
    assert (out.inference.avg_ms, out.inference.std_ms, out.inference.min_ms) == pytest.approx(
        (avg / 1000, std / 1000, low / 1000))
    assert out.median_ms == pytest.approx(avg / 1000)
    assert out.init_ms == pytest.approx(0.5)


# ---------------------------------------------------------------- damaged files

@st.composite
def damaged_bytes(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if action == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[i] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[i:]
        elif action == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    folder = tmp_path_factory.mktemp("originals")
    onnx_path = tiny_classifier(folder / "tiny.onnx")
    tflite_path = build_tiny_tflite(folder / "tiny.tflite")
    return {"onnx": onnx_path.read_bytes(), "tflite": tflite_path.read_bytes(), "dir": folder}


def _write(originals, name: str, data: bytes) -> Path:
    path = originals["dir"] / name
    path.write_bytes(data)
    return path


@fuzz(150)
@given(data=st.data())
def test_a_damaged_onnx_file_loads_cleanly_or_is_a_clear_error(originals, data):
    from mixdeploy.models import load_model

    path = _write(originals, "damaged.onnx", data.draw(damaged_bytes(originals["onnx"])))
    try:
        loaded = load_model(str(path))
    except MixdeployError as err:
        assert str(path) in str(err) or "ONNX" in str(err)
        return
    assert loaded.num_classes >= 1 and loaded.preprocessing.input_size >= 1


@fuzz(200)
@given(data=st.data())
def test_a_damaged_tflite_file_is_inspected_cleanly_or_is_a_clear_error(originals, data):
    from mixdeploy.tflite.inspect import inspect_tflite

    path = _write(originals, "damaged.tflite", data.draw(damaged_bytes(originals["tflite"])))
    try:
        facts = inspect_tflite(path)
    except MixdeployError as err:
        assert str(path) in str(err)
        return
    assert facts.file_size == path.stat().st_size and sum(facts.op_histogram.values()) >= 0


@fuzz(80)
@given(data=st.data())
def test_a_cut_or_padded_tflite_file_loads_in_litert_cleanly_or_is_a_clear_error(originals, data):
    """What a broken download or copy does (cut short, or with bytes after the end). Not arbitrary
    byte flips: LiteRT's C++ kernels trust the op options the flatbuffer verifier lets through,
    and a forged option (a negative split count) crashes the process, which no Python catches."""
    from mixdeploy.runtimes import TfliteRunner

    original = originals["tflite"]
    if data.draw(st.booleans()):
        damaged = original[: data.draw(st.integers(0, len(original) - 1))]
    else:
        damaged = original + data.draw(st.binary(min_size=1, max_size=64))
    path = _write(originals, "cut.tflite", damaged)
    try:
        runner = TfliteRunner(path, num_threads=1)
    except MixdeployError as err:
        assert str(path) in str(err)
        return
    logits = runner.run(np.zeros((1, 3, 16, 16), np.float32))
    assert logits.shape == (1, 10)
