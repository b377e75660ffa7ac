"""mixdeploy.parity metrics, thresholds and renderers, checked against independent computations."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine as scipy_cosine_distance

from mixdeploy import parity
from mixdeploy.data import ImageSet


def _logits(n=500, classes=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, classes)).astype(np.float32), rng.integers(0, classes, n)


def test_metrics_match_independent_references():
    ref, labels = _logits()
    rng = np.random.default_rng(1)
    noise = rng.normal(scale=0.3, size=ref.shape).astype(np.float32)
    cand = ref + noise
    m = parity.compare(ref, cand, labels)

    t_ref, t_cand, t_labels = map(torch.from_numpy, (ref, cand, labels))
    assert m.top1_agreement == pytest.approx(float((t_ref.argmax(1) == t_cand.argmax(1)).float().mean()))
    assert m.top1 == pytest.approx(float((t_cand.argmax(1) == t_labels).float().mean()))
    top5 = t_cand.topk(5, dim=1).indices
    assert m.top5 == pytest.approx(float((top5 == t_labels[:, None]).any(1).float().mean()))
    assert m.reference_top1 == pytest.approx(float((t_ref.argmax(1) == t_labels).float().mean()))
    assert m.top1_drop_points == pytest.approx((m.reference_top1 - m.top1) * 100)
    cosines = [1 - scipy_cosine_distance(r, c) for r, c in zip(ref.astype(np.float64), cand.astype(np.float64))]
    assert m.mean_cosine == pytest.approx(np.mean(cosines), rel=1e-9)
    assert m.max_abs_error == pytest.approx(float(np.abs(noise).max()), rel=1e-6)
    # unit-variance signal, noise std 0.3: SQNR = 10 log10(1 / 0.09) ~ 10.46 dB
    assert m.sqnr_db == pytest.approx(10 * np.log10(1 / 0.09), abs=0.3)


def test_sqnr_ignores_each_images_common_logit_offset():
    """Softmax and top-1 ignore a constant added to all of an image's logits; SQNR must too, or
    a model that loses such an offset on a few images fails a --min-sqnr-db gate it meets."""
    ref, labels = _logits()
    rng = np.random.default_rng(2)
    noise = rng.normal(scale=0.3, size=ref.shape).astype(np.float32)
    offsets = np.zeros((len(ref), 1), np.float32)
    offsets[:5] = -10.0                       # 1% of the images lose a large common offset
    plain = parity.compare(ref, ref + noise, labels)
    shifted = parity.compare(ref, ref + noise + offsets, labels)
    assert shifted.top1_agreement == plain.top1_agreement
    assert shifted.sqnr_db == pytest.approx(plain.sqnr_db, abs=1e-6)
    # the raw (uncentered) ratio of the same logits sits far lower: the offset would dominate it
    raw = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((noise + offsets).astype(np.float64) ** 2))
    assert shifted.sqnr_db > raw + 8
    # the noise itself still counts: ten times the noise is 20 dB less
    louder = parity.compare(ref, ref + 10 * noise, labels)
    assert louder.sqnr_db == pytest.approx(plain.sqnr_db - 20, abs=0.05)


def test_sqnr_of_a_single_logit_is_not_centered_away():
    ref = np.random.default_rng(3).normal(size=(200, 1)).astype(np.float32)
    m = parity.compare(ref, ref + 0.3)        # a constant error on the only logit is an error
    assert m.sqnr_db == pytest.approx(10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / (200 * 0.09)), abs=1e-3)


def test_identical_logits_are_perfect_and_json_safe():
    ref, labels = _logits()
    m = parity.compare(ref, ref.copy(), labels)
    assert m.top1_agreement == 1.0 and m.max_abs_error == 0.0 and m.top1_drop_points == 0.0
    assert m.sqnr_db == parity.MAX_SQNR_DB
    json.dumps(m.to_dict(), allow_nan=False)


def test_per_class_delta_names_the_damaged_class():
    labels = np.repeat(np.arange(3), 10)
    ref = np.eye(3, dtype=np.float32)[labels] * 5          # reference always right
    cand = ref.copy()
    cand[labels == 2] = np.eye(3, dtype=np.float32)[0] * 5  # class 2 always predicted as 0
    m = parity.compare(ref, cand, labels, class_names=["cat", "dog", "bird"])
    assert m.per_class_delta_points == pytest.approx({"cat": 0.0, "dog": 0.0, "bird": -100.0})


def test_shape_mismatch_is_a_clear_error():
    from mixdeploy.errors import MixdeployError

    with pytest.raises(MixdeployError, match="do not match"):
        parity.compare(np.zeros((4, 10)), np.zeros((4, 1000)))


def test_thresholds_report_which_metric_failed():
    ref, labels = _logits()
    cand = ref.copy()
    cand[:20] = -cand[:20]    # 20 of 500 images flip their argmax -> agreement 96%
    m = parity.compare(ref, cand, labels, backend="tflite:x")
    checks = parity.check_thresholds(m, parity.Thresholds(min_top1_agreement=0.99, max_top1_drop=100.0, min_cosine=0.5))
    by_name = {c.threshold: c for c in checks}
    assert not by_name["min_top1_agreement"].passed
    assert by_name["max_top1_drop"].passed and by_name["min_cosine"].passed
    assert "96.00% < 99.00%" in by_name["min_top1_agreement"].message


def test_drop_threshold_is_skipped_without_labels():
    ref, _ = _logits()
    m = parity.compare(ref, ref, None)
    names = [c.threshold for c in parity.check_thresholds(m, parity.Thresholds())]
    assert names == ["min_top1_agreement"]


class _FixedRunnerModel:
    """A stand-in LoadedModel whose module returns preset logits for preset images."""

    def __init__(self, logits):
        import torch.nn as nn

        class Lookup(nn.Module):
            def forward(self, x):
                idx = x[:, 0, 0, 0].long()
                return torch.from_numpy(logits)[idx]

        self.module = Lookup()
        self.name = "lookup"


def test_run_parity_renders_json_markdown_and_junit(tmp_path, monkeypatch):
    ref, labels = _logits(n=50)
    images = ImageSet(images=np.arange(50, dtype=np.float32).reshape(50, 1, 1, 1) * np.ones((1, 3, 2, 2), np.float32),
                      labels=labels, class_names=[f"c{i}" for i in range(10)], source="synthetic")
    bad = ref.copy()
    bad[:10] = -bad[:10]

    from mixdeploy import runtimes

    class FakeTflite:
        def __init__(self, path, name=None, num_threads=None):
            self.name = name
            self.logits = ref if "good" in str(path) else bad

        def run(self, x, batch_size=64, progress=None):
            if progress:
                progress(len(x))
            return self.logits[x[:, 0, 0, 0].astype(int)]

    monkeypatch.setattr(runtimes, "TfliteRunner", FakeTflite)
    good, broken = tmp_path / "good.tflite", tmp_path / "broken.tflite"
    good.write_bytes(b"x")
    broken.write_bytes(b"x")
    result = parity.run_parity(_FixedRunnerModel(ref), [good, broken], images=images)
    assert not result.passed
    assert {c.backend for c in result.violations} == {"tflite:broken.tflite"}

    paths = parity.write_reports(result, tmp_path / "report")
    loaded = json.loads(paths["json"].read_text())
    assert loaded["passed"] is False and len(loaded["backends"]) == 2
    junit = ET.parse(paths["junit"]).getroot()
    cases = junit.findall(".//testcase")
    assert len(cases) == 4   # 2 backends x (agreement, drop)
    failed = [(c.get("classname"), c.get("name")) for c in cases if c.find("failure") is not None]
    assert ("parity.tflite:broken.tflite", "min_top1_agreement") in failed
    assert all(cls == "parity.tflite:broken.tflite" for cls, _ in failed)
    markdown = paths["markdown"].read_text()
    assert "**FAIL**" in markdown and "tflite:broken.tflite" in markdown


def test_a_value_exactly_on_the_limit_passes():
    # 176/200 vs 175/200 correct: a drop of exactly 0.5 points, which float subtraction makes 0.5000000000000004
    labels = np.zeros(200, np.int64)
    ref = np.zeros((200, 2), np.float32)
    ref[:176, 0] = 1
    ref[176:, 1] = 1
    cand = ref.copy()
    cand[175] = [0, 1]
    m = parity.compare(ref, cand, labels)
    assert m.top1_drop_points == pytest.approx(0.5)
    checks = parity.check_thresholds(m, parity.Thresholds(min_top1_agreement=0.995, max_top1_drop=0.5))
    assert all(c.passed for c in checks), [c.message for c in checks]
