"""The images and reference every int8 accuracy benchmark uses, so their rows are comparable.

benchmarks/accuracy.py (mixdeploy's techniques) and benchmarks/peers_accuracy.py (the peer
tools) both take from here:
  evaluation   the first `count` Fashion-MNIST test images;
  calibration  draw d: `count` train images at indices
               sort(default_rng(1000 + d).choice(60000, count, replace=False));
both preprocessed with the checkpoint's own preprocessing (its metadata holds it); the
reference is PyTorch fp32 of the loaded module; metrics are `mixdeploy.parity.compare`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixdeploy import data, parity, runtimes
from mixdeploy.preprocess import Preprocessing

CALIBRATION_SEED_BASE = data.TRAIN_SAMPLE_SEED   # draw d uses seed 1000 + d; draw 0 is what export uses
TRAIN_IMAGES = 60000


@dataclass
class EvalSet:
    images: np.ndarray      # N,3,S,S float32, preprocessed
    labels: np.ndarray      # N int64
    reference: np.ndarray   # N,classes: PyTorch fp32 logits of the loaded module


def calibration_indices(draw: int, count: int) -> np.ndarray:
    """Train-split indices of calibration draw `draw` (sorted, without repeats)."""
    if not 1 <= count <= TRAIN_IMAGES or draw < 0:
        raise ValueError(f"calibration draw {draw} of {count} images: count must be 1..{TRAIN_IMAGES}, draw >= 0 "
                         "(the arguments are (draw, count))")
    # the export's own rule (`mixdeploy export --calib fashion-mnist` calibrates on draw 0)
    return data.train_sample_rows(TRAIN_IMAGES, count, seed=CALIBRATION_SEED_BASE + draw)


def calibration_images(preprocessing: Preprocessing, draw: int, count: int) -> np.ndarray:
    """Calibration draw `draw`: N,3,S,S float32, preprocessed like the evaluation images."""
    images, _ = data.load_fashion_mnist_raw("train")
    return data.preprocess_arrays(images[calibration_indices(draw, count)], preprocessing)


def eval_set(loaded, count: int) -> EvalSet:
    """The first `count` test images, their labels and the PyTorch fp32 reference logits."""
    images_u8, labels = data.load_fashion_mnist_raw("test")
    images = data.preprocess_arrays(images_u8[:count], loaded.preprocessing)
    reference = runtimes.TorchRunner(loaded.module).run(images)
    return EvalSet(images=images, labels=labels[:count], reference=reference)


def metrics(evaluation: EvalSet, logits: np.ndarray, name: str) -> parity.BackendMetrics:
    return parity.compare(evaluation.reference, logits, labels=evaluation.labels, backend=name)


SUMMARY_FIELDS = ("top1", "top1_drop_points", "top1_agreement", "mean_cosine")


def row_metrics(m: parity.BackendMetrics) -> dict:
    """The per-draw numbers both benchmarks report."""
    return {"top1": m.top1, "top1_drop_points": m.top1_drop_points, "top1_agreement": m.top1_agreement,
            "mean_cosine": m.mean_cosine, "min_cosine": m.min_cosine, "max_abs_error": m.max_abs_error,
            "sqnr_db": m.sqnr_db}


def summarize(rows: list[dict]) -> dict:
    """Spread over calibration draws: per field mean, sd (n-1; 0 for one draw), min, max."""
    summary = {"draws": len(rows)}
    for name in SUMMARY_FIELDS:
        values = np.array([row[name] for row in rows], np.float64)
        summary[name] = {"mean": float(values.mean()), "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "min": float(values.min()), "max": float(values.max())} if len(values) else None
    return summary


def write_results(out: Path, document: dict, render) -> None:
    """An experiment's results as out.json and its rendered table as out.md, the table printed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    text = render(document)
    out.with_suffix(".md").write_text(text)
    print(text)
