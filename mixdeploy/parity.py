"""Accuracy parity: PyTorch is the reference (onnxruntime for a model given as an ONNX file); every
other backend is measured against it and gated.

Metrics per backend (all on the same preprocessed images):
  top-1 / top-5 accuracy (when labels exist) and the top-1 drop vs PyTorch in points,
  top-1 agreement (fraction of images whose argmax equals PyTorch's), mean logit cosine,
  max abs logit error, SQNR in dB (10*log10(signal energy / error energy) over all logits, each
  image's logits taken relative to their own mean: softmax ignores that common offset),
  per-class accuracy deltas, and the top-1 flips (images whose predicted class changed, counted
  per reference class -> candidate class pair: the confusions quantization introduced).
Thresholds apply to every non-reference backend; each (backend, threshold) pair is one check,
rendered as one JUnit testcase so CI shows exactly which backend violated what.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixdeploy.errors import MixdeployError
from mixdeploy.views import dash_or

MAX_SQNR_DB = 300.0  # identical logits: report a finite ceiling, JSON has no infinity
# Count-based metrics land exactly on limits (e.g. 0.880 - 0.875 = 0.5000000000000004 points):
# compare with a tolerance far below one image's worth so "drop 0.50 <= 0.50" passes.
LIMIT_TOLERANCE = 1e-9
# Flip pairs kept per backend: all of them for 10 classes (at most 90), the commonest for 1000.
MAX_FLIP_PAIRS = 50

ProgressFn = Callable[[str, int, int], None]  # (backend name, images done, images total)


@dataclass
class BackendMetrics:
    backend: str
    images: int
    top1_agreement: float                     # fraction, vs the reference argmax
    mean_cosine: float                        # an image with a NaN/inf logit counts as cosine 0
    max_abs_error: float | None               # None when a logit is NaN/inf (no finite bound)
    sqnr_db: float | None
    top1: float | None = None                 # accuracy, fraction (labels needed)
    top5: float | None = None
    reference_top1: float | None = None
    top1_drop_points: float | None = None     # (reference - candidate) * 100
    per_class_delta_points: dict[str, float] | None = None
    flips: list[dict] | None = None           # [{"reference": cls, "candidate": cls, "count": n}], most first
    path: str | None = None
    file_size: int | None = None
    seconds: float | None = None
    min_cosine: float | None = None           # the worst image's logit cosine
    vs_host_litert: dict | None = None        # ARM64 twin runs: its raw outputs vs host LiteRT's
    non_finite_outputs: int = 0               # NaN/inf logits: any fails the gate

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class OutputDifference:
    """Raw outputs of two runs of one model on the same input bytes (ARM kernels vs the host's):
    how many values differ, and for integer outputs by how many quantization steps."""

    dtype: str
    values: int
    differing: int
    max_steps: int | None = None              # integer outputs: the largest |difference|
    steps: dict[str, int] | None = None       # integer outputs: {"1": values off by 1 step, ...}

    @property
    def fraction(self) -> float:
        return self.differing / self.values if self.values else 0.0

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "fraction": self.fraction}


@dataclass(frozen=True)
class Thresholds:
    min_top1_agreement: float | None = 0.99
    max_top1_drop: float | None = 0.5          # points of top-1 accuracy (needs labels)
    min_cosine: float | None = None
    min_sqnr_db: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Check:
    backend: str
    threshold: str
    limit: float
    value: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ParityResult:
    model: str
    data: str
    images: int
    reference: BackendMetrics
    backends: list[BackendMetrics]
    thresholds: Thresholds
    checks: list[Check] = field(default_factory=list)
    preprocessing: dict | None = None
    blame: dict | None = None                 # filled by the CLI when --blame ran
    cluster: dict | None = None               # Ray run facts (nodes, CPUs, wall time, images/s); None locally
    # the reference's logits, so that a second run on the same images (the gate's verified fix)
    # does not compute them again; not part of the report
    reference_run: BackendRun | None = field(default=None, repr=False, compare=False)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {
            "passed": self.passed, "model": self.model, "data": self.data, "images": self.images,
            "thresholds": self.thresholds.to_dict(), "preprocessing": self.preprocessing,
            "reference": self.reference.to_dict(), "backends": [b.to_dict() for b in self.backends],
            "checks": [c.to_dict() for c in self.checks],
            "violations": [c.to_dict() for c in self.violations], "blame": self.blame,
            "cluster": self.cluster,
        }


# ---------------------------------------------------------------- metrics


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    num = np.sum(a * b, axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    # two all-zero rows are identical (cos 1); one all-zero row against a non-zero row is 0
    return np.where(den > 0, num / np.maximum(den, 1e-30), np.where(np.all(a == b, axis=1), 1.0, 0.0))


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Logit SQNR over (N, classes) logits, each row centered on its own mean first.

    Why centered: adding one constant to all of an image's logits changes neither its softmax nor
    its top-1, yet int8 models lose such offsets on a few images, and raw SQNR would then fail a
    `--min-sqnr-db` gate on a model that agrees 98% (measured example: docs/parity.md)."""
    ref = reference.astype(np.float64)
    cand = np.asarray(candidate, np.float64)
    if ref.ndim == 2 and ref.shape[1] > 1:   # one logit per image (a sigmoid output) has no offset to drop
        ref = ref - ref.mean(axis=1, keepdims=True)
        cand = cand - cand.mean(axis=1, keepdims=True)
    signal = float(np.sum(ref ** 2))
    noise = float(np.sum((ref - cand) ** 2))
    if noise <= signal * 10 ** (-MAX_SQNR_DB / 10):
        return MAX_SQNR_DB
    return 10.0 * np.log10(max(signal, 1e-300) / noise)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    topk = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1)))


def per_class_accuracy(logits: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    correct = logits.argmax(1) == labels
    acc = np.full(num_classes, np.nan)
    for c in range(num_classes):
        mask = labels == c
        if mask.any():
            acc[c] = correct[mask].mean()
    return acc


def top1_flips(reference_top1: np.ndarray, candidate_top1: np.ndarray, names: list[str]) -> list[dict]:
    """Images whose top-1 class changed, counted per (reference class, candidate class), most first."""
    changed = reference_top1 != candidate_top1
    pairs = Counter(zip(reference_top1[changed].tolist(), candidate_top1[changed].tolist()))
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_FLIP_PAIRS]
    return [{"reference": names[r], "candidate": names[c], "count": n} for (r, c), n in ranked]


def _top1(logits: np.ndarray) -> np.ndarray:
    """argmax per row; -1 for a row holding NaN/inf (its argmax would be an arbitrary class)."""
    top1 = logits.argmax(1) if logits.size else np.zeros(len(logits), np.int64)
    return np.where(np.all(np.isfinite(logits), axis=1), top1, -1)


def _accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """top-k accuracy; a row holding NaN/inf counts as wrong."""
    finite = np.all(np.isfinite(logits), axis=1)
    if finite.all():
        return topk_accuracy(logits, labels, k)
    k = min(k, logits.shape[1])
    topk = np.argpartition(-np.where(np.isfinite(logits), logits, 0), kth=k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(topk == labels[:, None], axis=1) & finite))


def compare(reference_logits: np.ndarray, candidate_logits: np.ndarray, labels: np.ndarray | None = None,
            backend: str = "candidate", class_names: list[str] | None = None) -> BackendMetrics:
    """Metrics of `candidate_logits` against `reference_logits` (both (N, classes)).

    NaN/inf logits never look like agreement: their images count as disagreeing and wrong,
    with cosine 0; max abs error and SQNR are None (no finite value describes them), and
    `non_finite_outputs` counts them for the gate."""
    ref = np.asarray(reference_logits, np.float32)
    cand = np.asarray(candidate_logits, np.float32)
    if ref.shape != cand.shape:
        raise MixdeployError(f"{backend} produced logits of shape {cand.shape}, the reference {ref.shape}; "
                             "the models do not match (different classes or input?)")
    finite_rows = np.all(np.isfinite(ref), axis=1) & np.all(np.isfinite(cand), axis=1)
    all_finite = bool(finite_rows.all())
    with np.errstate(invalid="ignore", over="ignore"):
        cosines = np.where(finite_rows, _cosine_rows(np.nan_to_num(ref.astype(np.float64)),
                                                     np.nan_to_num(cand.astype(np.float64))), 0.0)
    ref_top1, cand_top1 = _top1(ref), _top1(cand)
    metrics = BackendMetrics(
        backend=backend,
        images=int(len(ref)),
        top1_agreement=float(np.mean((ref_top1 == cand_top1) & finite_rows)) if len(ref) else 0.0,
        mean_cosine=float(np.mean(cosines)) if len(ref) else 0.0,
        max_abs_error=(float(np.max(np.abs(ref - cand))) if ref.size else 0.0) if all_finite else None,
        sqnr_db=float(sqnr_db(ref, cand)) if all_finite else None,
        min_cosine=float(np.min(cosines)) if len(ref) else None,
        non_finite_outputs=int(cand.size - np.count_nonzero(np.isfinite(cand))),
    )
    num_classes = ref.shape[1]
    names = class_names if class_names and len(class_names) == num_classes else [str(c) for c in range(num_classes)]
    names = [*names, "NaN/inf"]   # index -1: the rows without a class
    metrics.flips = top1_flips(ref_top1, cand_top1, names)
    if labels is not None:
        labels = np.asarray(labels, np.int64)
        metrics.top1 = _accuracy(cand, labels, 1)
        metrics.top5 = _accuracy(cand, labels, 5)
        metrics.reference_top1 = _accuracy(ref, labels, 1)
        metrics.top1_drop_points = (metrics.reference_top1 - metrics.top1) * 100.0
        delta = (per_class_accuracy(cand, labels, num_classes) - per_class_accuracy(ref, labels, num_classes)) * 100.0
        metrics.per_class_delta_points = {names[c]: float(delta[c]) for c in range(num_classes) if not np.isnan(delta[c])}
    return metrics


def output_difference(reference_raw: np.ndarray, candidate_raw: np.ndarray) -> OutputDifference:
    """Value-by-value difference of two runs' raw outputs (same model, same input bytes)."""
    ref, cand = np.asarray(reference_raw), np.asarray(candidate_raw)
    if ref.shape != cand.shape or ref.dtype != cand.dtype:
        raise MixdeployError(f"raw outputs differ in kind ({cand.dtype} {cand.shape} vs the reference's "
                             f"{ref.dtype} {ref.shape}): they are not from the same model")
    differing = int(np.count_nonzero(ref != cand))
    result = OutputDifference(dtype=ref.dtype.name, values=int(ref.size), differing=differing)
    if ref.dtype.kind in "iu":
        steps = np.abs(ref.astype(np.int64) - cand.astype(np.int64))
        result.max_steps = int(steps.max()) if steps.size else 0
        counts = np.bincount(steps.ravel())
        result.steps = {str(k): int(n) for k, n in enumerate(counts) if k and n}
    return result


def describe_vs_host(vs_host: dict) -> str:
    """One line for a backend's `vs_host_litert`: how its outputs differ from host LiteRT's."""
    diff = vs_host["output_difference"]
    text = (f"{diff['differing']}/{diff['values']} {diff['dtype']} output values differ from host LiteRT "
            f"({diff['fraction'] * 100:.1f}%)")
    if diff["max_steps"]:
        text += f", by at most {diff['max_steps']} quantization step{'s' if diff['max_steps'] > 1 else ''}"
    return (text + f"; max abs err {vs_host['max_abs_err']:.3g}, top-1 agreement with the host "
            f"{vs_host['top1_agreement'] * 100:.2f}% (ran on {vs_host['machine']}, {vs_host['cpu_model']})")


def check_thresholds(metrics: BackendMetrics, thresholds: Thresholds) -> list[Check]:
    """One Check per active threshold; a drop threshold without labels is skipped, not failed."""
    checks = []

    def add(name, value, limit, ok, text):
        checks.append(Check(metrics.backend, name, limit, value, ok, text))

    def at_least(v, limit):
        return v >= limit - LIMIT_TOLERANCE

    def at_most(v, limit):
        return v <= limit + LIMIT_TOLERANCE

    t = thresholds
    if t.min_top1_agreement is not None:
        v = metrics.top1_agreement
        add("min_top1_agreement", v, t.min_top1_agreement, at_least(v, t.min_top1_agreement),
            f"top-1 agreement {v * 100:.2f}% {'>=' if at_least(v, t.min_top1_agreement) else '<'} {t.min_top1_agreement * 100:.2f}%")
    if t.max_top1_drop is not None and metrics.top1_drop_points is not None:
        v = metrics.top1_drop_points
        add("max_top1_drop", v, t.max_top1_drop, at_most(v, t.max_top1_drop),
            f"top-1 drop {v:.2f} points {'<=' if at_most(v, t.max_top1_drop) else '>'} {t.max_top1_drop:.2f}")
    if t.min_cosine is not None:
        v = metrics.mean_cosine
        add("min_cosine", v, t.min_cosine, at_least(v, t.min_cosine),
            f"mean cosine {v:.5f} {'>=' if at_least(v, t.min_cosine) else '<'} {t.min_cosine:.5f}")
    if t.min_sqnr_db is not None:
        v = metrics.sqnr_db
        if v is None:
            add("min_sqnr_db", None, t.min_sqnr_db, False, "SQNR undefined: NaN/inf outputs")
        else:
            add("min_sqnr_db", v, t.min_sqnr_db, at_least(v, t.min_sqnr_db),
                f"SQNR {v:.1f} dB {'>=' if at_least(v, t.min_sqnr_db) else '<'} {t.min_sqnr_db:.1f} dB")
    if metrics.non_finite_outputs:   # whatever the thresholds: NaN/inf outputs never pass
        add("finite_outputs", metrics.non_finite_outputs, 0, False,
            f"{metrics.non_finite_outputs} output values are NaN or infinite")
    return checks


# ---------------------------------------------------------------- running


def _timed_run(runner, images, batch_size, progress: ProgressFn | None) -> tuple[np.ndarray, float]:
    done = 0

    def step(n):
        nonlocal done
        done += n
        if progress:
            progress(runner.name, done, len(images))

    started = time.perf_counter()
    logits = runner.run(images, batch_size=batch_size, progress=step)
    return logits, time.perf_counter() - started


@dataclass
class BackendRun:
    """One backend's logits over the whole image set, in image order."""
    backend: str
    logits: np.ndarray
    seconds: float
    path: str | None = None                   # the model file (None for the PyTorch reference)
    vs_host_litert: dict | None = None        # ARM64 twin runs: raw outputs vs host LiteRT's


def backend_runners(model, tflite_paths=(), onnx_path=None, num_threads=None, tflite_runner=None) -> list[tuple]:
    """(runner, model path or None) for the reference (first: PyTorch, or onnxruntime on an ONNX
    source), the ONNX and each TFLite model.

    num_threads: one count for every runtime, or a dict with keys "torch", "onnx", "tflite"
    (what a Ray worker gets, so that it computes with the settings of the local run).
    tflite_runner(path, num_threads) -> Runner runs the TFLite models instead of host LiteRT
    (mixdeploy.bench.twin.TwinRunner: the ARM64 twin).
    """
    from mixdeploy import runtimes

    threads = _thread_counts(num_threads)
    # the PyTorch module; for an ONNX source (no module) onnxruntime on the user's original file
    reference = runtimes.make_runner(model.module, num_threads=threads["torch"]) if model.module is not None \
        else runtimes.make_runner(model, num_threads=threads["onnx"])
    return [(reference, None), *candidate_runners(tflite_paths, onnx_path, num_threads, tflite_runner)]


def candidate_runners(tflite_paths=(), onnx_path=None, num_threads=None, tflite_runner=None) -> list[tuple]:
    """backend_runners without the reference: (runner, path) for the ONNX and each TFLite model."""
    from mixdeploy import runtimes

    threads = _thread_counts(num_threads)
    runners = []
    if onnx_path is not None:
        runners.append((runtimes.OnnxRunner(onnx_path, name=f"onnx:{Path(str(onnx_path)).name}",
                                            num_threads=threads["onnx"]), onnx_path))
    for path in tflite_paths:
        runner = tflite_runner(path, threads["tflite"]) if tflite_runner else \
            runtimes.TfliteRunner(path, name=f"tflite:{Path(path).name}", num_threads=threads["tflite"])
        runners.append((runner, path))
    return runners


def _thread_counts(num_threads) -> dict:
    return num_threads if isinstance(num_threads, dict) else dict.fromkeys(("torch", "onnx", "tflite"), num_threads)


def score(model, runs: list[BackendRun], labels, class_names, data: str, thresholds: Thresholds | None = None,
          preprocessing: dict | None = None) -> ParityResult:
    """Metrics of every run against the first (the reference) and the threshold checks.

    The one place parity numbers are made: the local run and the Ray run (mixdeploy.parity_ray)
    both end here, with the logits of all images in image order.
    """
    thresholds = thresholds or Thresholds()
    reference_run, candidate_runs = runs[0], runs[1:]
    ref_logits = reference_run.logits
    reference = compare(ref_logits, ref_logits, labels, backend=reference_run.backend, class_names=class_names)
    reference.seconds = reference_run.seconds
    backends, checks = [], []
    if reference.non_finite_outputs:   # the reference itself is broken: nothing can agree with it
        checks.append(Check(reference.backend, "finite_outputs", 0, reference.non_finite_outputs, False,
                            f"the reference gives {reference.non_finite_outputs} NaN/inf output values"))
    for run in candidate_runs:
        metrics = compare(ref_logits, run.logits, labels, backend=run.backend, class_names=class_names)
        metrics.path, metrics.seconds = str(run.path), run.seconds
        metrics.file_size = Path(run.path).stat().st_size if Path(str(run.path)).is_file() else None
        metrics.vs_host_litert = run.vs_host_litert
        backends.append(metrics)
        checks.extend(check_thresholds(metrics, thresholds))
    return ParityResult(model=getattr(model, "name", type(model).__name__), data=data, images=len(ref_logits),
                        reference=reference, backends=backends, thresholds=thresholds, checks=checks,
                        preprocessing=preprocessing, reference_run=reference_run)


def run_backends(model, tflite_paths=(), onnx_path=None, images=None, progress: ProgressFn | None = None,
                 batch_size: int = 64, num_threads=None, tflite_runner=None,
                 reference: BackendRun | None = None) -> list[BackendRun]:
    """Logits of PyTorch (first), the optional ONNX and each TFLite model on `images` (NCHW float32).

    reference: the reference's run on these same images, reused instead of run again.
    A runner with a `vs_host_litert` dict after its run (the ARM64 twin's) passes it on."""
    if reference is None:
        runs, runners = [], backend_runners(model, tflite_paths, onnx_path, num_threads, tflite_runner)
    else:   # the reference's runner is not even built (for an ONNX source it is an onnxruntime session)
        runs, runners = [reference], candidate_runners(tflite_paths, onnx_path, num_threads, tflite_runner)
    for runner, path in runners:
        logits, seconds = _timed_run(runner, images, batch_size, progress)
        runs.append(BackendRun(runner.name, logits, seconds, None if path is None else str(path),
                               vs_host_litert=getattr(runner, "vs_host_litert", None)))
    return runs


def run_parity(model, tflite_paths=(), onnx_path=None, images=None, thresholds: Thresholds | None = None,
               progress: ProgressFn | None = None, batch_size: int = 64, num_threads: int | None = None,
               tflite_runner: Callable | None = None, reference: BackendRun | None = None) -> ParityResult:
    """Run PyTorch (reference), optional ONNX and each TFLite model on `images` (an ImageSet); gate.

    model: a LoadedModel (mixdeploy.models.load_model) or anything with `.module`/`.name`.
    tflite_runner: see backend_runners (`parity --backend arm64`: the ARM64 twin).
    reference: an earlier result's `reference_run` on the same images (not run again).
    """
    if images is None or len(images) == 0:
        raise MixdeployError("parity needs images; pass --data fashion-mnist, an image folder or a .npy")
    if reference is not None and len(reference.logits) != len(images):
        raise ValueError(f"the reference run has {len(reference.logits)} images, not {len(images)}")
    runs = run_backends(model, tflite_paths, onnx_path, images.images, progress, batch_size, num_threads,
                        tflite_runner, reference)
    return score(model, runs, images.labels, images.class_names, images.source, thresholds,
                 model.preprocessing.to_dict() if hasattr(model, "preprocessing") else None)


# ---------------------------------------------------------------- renderers


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}%"


def _rows(result: ParityResult) -> list[list[str]]:
    rows = []
    for m in [result.reference, *result.backends]:
        failed = [c.threshold for c in result.checks if c.backend == m.backend and not c.passed]
        status = "reference" if m is result.reference else ("FAIL: " + ", ".join(failed) if failed else "pass")
        rows.append([m.backend, _pct(m.top1), _pct(m.top5), dash_or(m.top1_drop_points, "+.2f"),
                     _pct(m.top1_agreement), dash_or(m.mean_cosine, ".5f"), dash_or(m.max_abs_error, ".4g"),
                     dash_or(m.sqnr_db, ".1f"), status])
    return rows


HEADERS = ["backend", "top-1", "top-5", "drop (pts)", "agreement", "cosine", "max |err|", "SQNR dB", "status"]


def to_markdown(result: ParityResult) -> str:
    lines = [
        f"# Parity: {result.model}",
        "",
        f"- data: {result.data} ({result.images} images)",
        f"- result: **{'PASS' if result.passed else 'FAIL'}**",
        "- thresholds: " + ", ".join(f"{k}={v}" for k, v in result.thresholds.to_dict().items() if v is not None),
        *([f"- ray: {cluster_summary(result.cluster)}"] if result.cluster else []),
        "",
        "| " + " | ".join(HEADERS) + " |",
        "|" + "---|" * len(HEADERS),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(result)]
    vs_host = [(m.backend, m.vs_host_litert) for m in result.backends if m.vs_host_litert]
    if vs_host:
        lines += ["", "## Against host LiteRT (the same input bytes)", ""]
        lines += [f"- `{backend}`: {describe_vs_host(v)}" for backend, v in vs_host]
    if result.violations:
        lines += ["", "## Violations", ""]
        lines += [f"- `{c.backend}`: {c.message}" for c in result.violations]
    worst = _worst_class_deltas(result)
    if worst:
        lines += ["", "## Largest per-class accuracy changes (points, vs PyTorch)", ""]
        lines += [f"- `{backend}`: " + ", ".join(f"{name} {delta:+.1f}" for name, delta in items) for backend, items in worst]
    if result.blame:
        lines += ["", "## Blame (int8 per-layer error)", "", result.blame.get("markdown", "")]
    return "\n".join(lines) + "\n"


def cluster_summary(cluster: dict) -> str:
    return (f"{cluster['nodes']} node(s), {cluster['cpus']:g} CPUs, {cluster['workers']} worker(s), "
            f"{cluster['shards']} shards, {cluster['wall_seconds']:.1f} s, {cluster['images_per_second']:.1f} images/s")


def _worst_class_deltas(result: ParityResult, k: int = 3):
    out = []
    for m in result.backends:
        if m.per_class_delta_points:
            items = sorted(m.per_class_delta_points.items(), key=lambda kv: kv[1])[:k]
            if any(abs(d) > 0 for _, d in items):
                out.append((m.backend, items))
    return out


JUNIT_REPORT_PROPERTY = "mixdeploy.report"


def to_junit_xml(result: ParityResult, report_link: str | None = None) -> str:
    """One <testcase> per backend per threshold; a violated threshold is a <failure>.

    `report_link` (a path or URL of the human report) becomes a testsuite property and ends
    every failure's text, so a CI page that shows the failure also shows where to look.
    """
    suite = ET.Element("testsuite", name=f"mixdeploy-parity.{result.model}", tests=str(len(result.checks)),
                       failures=str(len(result.violations)), errors="0", skipped="0")
    if report_link:
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name=JUNIT_REPORT_PROPERTY, value=report_link)
    for check in result.checks:
        case = ET.SubElement(suite, "testcase", classname=f"parity.{check.backend}", name=check.threshold)
        if not check.passed:
            failure = ET.SubElement(case, "failure", message=check.message, type="ThresholdViolation")
            failure.text = f"{check.backend}: {check.message} (value={check.value}, limit={check.limit})"
            if report_link:
                failure.text += f"\nreport: {report_link}"
        else:
            ET.SubElement(case, "system-out").text = check.message
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def rich_table(result: ParityResult):
    from rich.table import Table

    from rich.markup import escape

    # paths and file names are the user's: escaped, never read as rich markup. The data source
    # is printed on its own line (`describe_data`): a long path in a title would wrap.
    table = Table(title=escape(f"parity vs {result.reference.backend} ({result.images} images)"))
    for header in HEADERS:
        table.add_column(header, justify="left" if header in ("backend", "status") else "right")
    for row in _rows(result):
        style = "red" if row[-1].startswith("FAIL") else ("dim" if row[-1] == "reference" else "green")
        table.add_row(*map(escape, row[:-1]), f"[{style}]{escape(row[-1])}[/{style}]")
    return table


def describe_data(result: ParityResult) -> str:
    return f"data: {result.data}"


def write_reports(result: ParityResult, out_dir, report_link: str | None = None) -> dict[str, Path]:
    """parity.json, parity.md and parity-junit.xml in `out_dir`, each written atomically.

    The JUnit file links to `report_link` (e.g. where CI publishes `mixdeploy report`'s HTML),
    else to the parity.md written beside it.
    """
    from mixdeploy.atomic import write_json_atomic, write_text_atomic

    out_dir = Path(out_dir)
    return {
        "json": write_json_atomic(out_dir / "parity.json", result.to_dict()),
        "markdown": write_text_atomic(out_dir / "parity.md", to_markdown(result)),
        "junit": write_text_atomic(out_dir / "parity-junit.xml", to_junit_xml(result, report_link or "parity.md")),
    }
