"""`mixdeploy parity` as one library call: the parity gate, blame of a failing int8 model, and
the fix that blame suggests, verified.

  1. parity of every model against PyTorch (or onnxruntime on an ONNX source), gated;
  2. when an int8 model fails (and blame is on) or `keep_float="auto"`: rank its layers by int8
     error (mixdeploy.blame);
  3. then always a verified fix: convert again with blame's worst layers (or the nodes the user
     named) kept in float, run parity again on the same images, and time both int8 models in one
     interleaved run. The blame report ends in that fix: agreement before -> after, the latency
     and size it costs, and whether it passes the gate.

The command (mixdeploy.commands.parity) turns options into a GateRequest and prints the outcome
(mixdeploy.views.parity).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixdeploy import parity
from mixdeploy.errors import MixdeployError
from mixdeploy.manifest import MANIFEST_NAME
from mixdeploy.preprocess import Preprocessing, PreprocessingOverrides

FIX_SUFFIX = "_keepfloat.tflite"
Warn = Callable[[str], None]


@dataclass
class GateRequest:
    model: str
    tflite_paths: list[str] = field(default_factory=list)
    onnx_path: str | None = None
    weights: str | None = None
    num_classes: int | None = None
    preprocessing: PreprocessingOverrides = field(default_factory=PreprocessingOverrides)
    data_source: str = "fashion-mnist"
    limit: int | None = None
    thresholds: parity.Thresholds = field(default_factory=parity.Thresholds)
    blame: bool = True
    keep_float: str | None = None            # "auto" or "node,node": a fix even when the gate passes
    calibration: str | None = None           # images for blame and the fix (default: --data's train split)
    calibration_count: int = 64
    blame_images: int = 16
    batch_size: int = 64
    threads: int | None = None
    ray_address: str | None = None
    backend: str = "host"                    # or arm64[:CPU], the ARM64 twin
    report_dir: str | None = None            # --report: parity.json, .md, junit, blame.json and the fixed model
    report_link: str | None = None           # the HTML report parity-junit.xml links to


@dataclass
class VerifiedFix:
    """An int8 model converted again with some nodes in float, checked on the same images."""

    keep_float: list[str]
    target: str                              # the int8 model it fixes
    path: Path                               # the fixed model
    kept: bool                               # False: it lay in a temporary folder, now gone
    before: parity.BackendMetrics            # the target's parity
    after: parity.BackendMetrics             # the fixed model's parity, same images, same reference
    checks: list[parity.Check]               # the gate's thresholds on `after`
    baseline: object                         # blame.ModelCost of the target (timed with the candidate)
    candidate: object                        # blame.ModelCost of the fixed model

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def latency_delta_ms(self) -> float:
        return self.candidate.latency_ms - self.baseline.latency_ms

    def summary(self) -> str:
        b, a = self.before, self.after
        text = (f"keep {', '.join(self.keep_float)} in float: agreement {b.top1_agreement * 100:.2f}% -> "
                f"{a.top1_agreement * 100:.2f}%")
        if b.top1_drop_points is not None and a.top1_drop_points is not None:
            text += f", top-1 drop {b.top1_drop_points:.2f} -> {a.top1_drop_points:.2f} pts"
        text += (f", {self.latency_delta_ms:+.2f} ms ({self.baseline.latency_ms:.2f} -> "
                 f"{self.candidate.latency_ms:.2f} ms, LiteRT 1 thread, one interleaved run), "
                 f"{(self.candidate.file_size - self.baseline.file_size) / 1e6:+.2f} MB")
        failed = [c.message for c in self.checks if not c.passed]
        return text + ("; passes the gate" if self.passed else "; does NOT pass the gate: " + "; ".join(failed))

    def to_dict(self) -> dict:
        from dataclasses import asdict

        def headline(m):
            return {"top1_agreement": m.top1_agreement, "top1_drop_points": m.top1_drop_points,
                    "mean_cosine": m.mean_cosine}

        return {"keep_float": self.keep_float, "tflite": self.target,
                "path": str(self.path) if self.kept else "not kept (give --report DIR to keep the fixed model)",
                "before": headline(self.before), "after": headline(self.after), "parity": self.after.to_dict(),
                "checks": [c.to_dict() for c in self.checks], "passed": self.passed,
                "baseline": asdict(self.baseline), "candidate": asdict(self.candidate),
                "size_delta_bytes": self.candidate.file_size - self.baseline.file_size,
                "latency_delta_ms": round(self.latency_delta_ms, 4),
                "latency_ratio": round(self.candidate.latency_ms / self.baseline.latency_ms, 3)
                if self.baseline.latency_ms else None,
                "summary": self.summary()}


@dataclass
class GateOutcome:
    result: parity.ParityResult              # result.blame: the blame dict, ending in "fix"
    blame: object | None = None              # blame.BlameReport
    fix: VerifiedFix | None = None


def run_gate(request: GateRequest, progress: parity.ProgressFn | None = None,
             warn: Warn = print) -> GateOutcome:
    """Parity, then blame and a verified fix where they apply (see the module docstring); the
    reports written into `request.report_dir` when it is given."""
    from mixdeploy import data
    from mixdeploy.artifacts import export_folder_of
    from mixdeploy.atomic import scratch_dir
    from mixdeploy.bench import twin
    from mixdeploy.models import load_model

    progress = progress or (lambda stage, done, total: None)
    _check_request(request)
    tflite_runner = twin.parity_runner(request.backend)
    if tflite_runner and request.ray_address:
        raise MixdeployError("--backend arm64 runs the twin on this machine, not on Ray workers: drop --ray")
    loaded = load_model(request.model, weights=request.weights, num_classes=request.num_classes,
                        preprocessing=request.preprocessing)
    folder = export_folder_of(request.tflite_paths)
    loaded.preprocessing = _preprocessing(loaded, folder, request.preprocessing, warn)
    _check_input_sizes(request.tflite_paths, request.onnx_path, loaded.preprocessing.input_size)
    index = data.index_images(request.data_source, limit=request.limit)
    data.check_labels_match(index, loaded.num_classes)
    if request.ray_address:
        from mixdeploy.parity_ray import import_ray

        import_ray()   # before any work: a missing Ray is a set-up error, said at once
    run = _Run(request, loaded, folder, index, tflite_runner, progress)
    # blame's ONNX export, an unkept fix: one temporary folder, removed however the run ends
    with tempfile.TemporaryDirectory(prefix="mixdeploy-parity-", dir=scratch_dir()) as workdir:
        outcome = run.gate(Path(workdir))
    if request.report_dir:
        write_reports(outcome, request.report_dir, request.report_link)
    return outcome


def _check_request(request: GateRequest) -> None:
    from mixdeploy.atomic import check_output_dir

    if request.report_link and not request.report_dir:
        raise MixdeployError("--report-link names the report that parity-junit.xml links to: add --report DIR")
    if not request.tflite_paths and not request.onnx_path:
        raise MixdeployError("nothing to compare: pass --tflite FILE (repeatable) and/or --onnx FILE")
    for path in [*request.tflite_paths, *([request.onnx_path] if request.onnx_path else [])]:
        if not Path(path).is_file():
            raise MixdeployError(f"file not found: {path}")
    # where results go is checked before the run, not after it (when they would be lost)
    if request.report_dir:
        check_output_dir(request.report_dir, "--report")
    elif request.keep_float and request.tflite_paths:
        check_output_dir(Path(request.tflite_paths[0]).parent, "--keep-float (writes beside the int8 model)")


class _Run:
    """One gate run: the state the steps share (the model, the images, the runner settings)."""

    def __init__(self, request: GateRequest, loaded, folder, index, tflite_runner, progress):
        self.request, self.loaded, self.folder, self.index = request, loaded, folder, index
        self.tflite_runner, self.progress = tflite_runner, progress
        # Locally every image is loaded here; with Ray the workers load them, and this process
        # loads only the few that blame and the fix need.
        self.images = None if request.ray_address else index.load(loaded.preprocessing)

    def parity(self, tflite_paths, onnx_path, reference: parity.BackendRun | None = None) -> parity.ParityResult:
        """reference: the first run's reference logits, reused by a local run (a Ray run computes
        them on the cluster again: this process holds only the few images blame needs)."""
        r = self.request
        if r.ray_address:
            from mixdeploy.parity_ray import run_parity_ray

            return run_parity_ray(self.loaded, tflite_paths, onnx_path, self.index, thresholds=r.thresholds,
                                  address=r.ray_address, progress=self.progress, batch_size=r.batch_size,
                                  num_threads=r.threads)
        return parity.run_parity(self.loaded, tflite_paths, onnx_path=onnx_path, images=self.images,
                                 thresholds=r.thresholds, progress=self.progress, batch_size=r.batch_size,
                                 num_threads=r.threads, tflite_runner=self.tflite_runner, reference=reference)

    def gate(self, workdir: Path) -> GateOutcome:
        r = self.request
        result = self.parity(r.tflite_paths, r.onnx_path)
        outcome = GateOutcome(result)
        int8_paths = [p for p in r.tflite_paths if is_full_integer(p)]
        auto = bool(r.keep_float) and r.keep_float.strip().lower() == "auto"
        target = self._blame_target(result, int8_paths, force=auto) if (r.blame and not result.passed) or auto \
            else None
        if r.keep_float and not int8_paths:
            raise MixdeployError("--keep-float applies to int8 TFLite models; none was given")
        if target is None and not r.keep_float:
            return outcome
        target = target or int8_paths[0]
        if self.images is None:   # a Ray run: load the few images blame and the fix calibrate with
            self.images = self.index.load(self.loaded.preprocessing, stop=max(r.blame_images, r.calibration_count))
        onnx_file = self._float_onnx(target, workdir)
        calibration = self._calibration()
        result.blame = {"tflite": str(target)}
        if (r.blame and not result.passed) or auto:
            outcome.blame = self._blame(onnx_file, calibration)
            kept = not onnx_file.is_relative_to(workdir)   # an export made for blame goes with the workdir
            result.blame.update(onnx=str(onnx_file) if kept else f"exported from {self.loaded.name} (not kept)",
                                **outcome.blame.to_dict())
        outcome.fix = self._verified_fix(result, target, onnx_file, calibration, outcome.blame, workdir)
        result.blame["fix"] = outcome.fix.to_dict()      # last: the report ends in the fix
        result.blame["markdown"] = (result.blame.get("markdown", "") + "\n**Verified fix:** "
                                    + outcome.fix.summary() + "\n")
        return outcome

    def _blame_target(self, result, int8_paths, force: bool) -> str | None:
        """The first failing int8 model (or, when forced by keep_float auto, the first int8 model).
        By file, not backend name: `--backend arm64` names its backends arm64-CPU:FILE."""
        failing = {m.path for m in result.backends if any(c.backend == m.backend for c in result.violations)}
        targets = [p for p in int8_paths if str(p) in failing] or (list(int8_paths) if force else [])
        return targets[0] if targets else None

    def _float_onnx(self, tflite_path, workdir: Path) -> Path:
        """The ONNX graph the int8 model was converted from: --onnx, else the one in its export
        folder, else the ONNX source itself or an export of the PyTorch model."""
        from mixdeploy.artifacts import ExportFolder

        if self.request.onnx_path:
            return Path(self.request.onnx_path)
        beside = ExportFolder.beside(tflite_path).onnx()
        if beside is not None:
            return beside
        if self.loaded.module is None:   # the model was given as an ONNX file
            return Path(self.loaded.onnx_path)
        from mixdeploy.onnx.export import export_onnx

        return Path(export_onnx(self.loaded.module, self.loaded.preprocessing.input_size,
                                workdir / "model.onnx").path)

    def _calibration(self) -> np.ndarray:
        from mixdeploy import data

        r, pre = self.request, self.loaded.preprocessing
        # Fashion-MNIST as data_index resolved it (every spelling it accepts): its train split
        source = r.calibration or (r.data_source if self.index.kind == "fashion-mnist" else None)
        if source:
            return data.load_images(source, pre, limit=r.calibration_count, split="train").images
        return self.images.images[:r.calibration_count]

    def _blame(self, onnx_file: Path, calibration: np.ndarray):
        from mixdeploy import blame

        self.progress("blame: QuantizationDebugger", 0, 1)
        report = blame.blame_int8(onnx_file, calibration, self.images.images[: self.request.blame_images],
                                  input_layout=self.folder.input_layout, recipe=self.folder.quant_recipe)
        self.progress("blame: QuantizationDebugger", 1, 1)
        return report

    def _verified_fix(self, result, target, onnx_file, calibration, report, workdir: Path) -> VerifiedFix:
        from mixdeploy import blame

        r = self.request
        spec = (r.keep_float or "auto").strip()
        nodes = blame.suggest_keep_float(report) if spec.lower() == "auto" else \
            [n.strip() for n in spec.split(",") if n.strip()]
        if not nodes:
            raise MixdeployError("blame ranked no quantized layer, so there is nothing to keep in float; "
                                 "name the nodes: --keep-float NODE,...")
        kept = bool(r.report_dir or r.keep_float)
        out_dir = Path(r.report_dir) if r.report_dir else (Path(target).parent if r.keep_float else workdir)
        out_path = out_dir / f"{Path(target).stem}{FIX_SUFFIX}"
        self.progress("fix: convert with " + ", ".join(nodes) + " in float", 0, 1)
        tradeoff = blame.reexport_keep_float(onnx_file, nodes, calibration, out_path, target,
                                             io_dtype=self.folder.io_dtype, input_layout=self.folder.input_layout,
                                             recipe=self.folder.quant_recipe)
        self.progress("fix: convert with " + ", ".join(nodes) + " in float", 1, 1)
        rerun = self.parity([out_path], None, reference=result.reference_run)
        before = next(m for m in result.backends if m.path == str(target))
        return VerifiedFix(keep_float=nodes, target=str(target), path=out_path, kept=kept, before=before,
                           after=rerun.backends[0], checks=rerun.checks, baseline=tradeoff.baseline,
                           candidate=tradeoff.candidate)


def is_full_integer(tflite_path) -> bool:
    """Whether a .tflite computes in integers (int8 / 16x8): the models blame and the fix apply to."""
    from mixdeploy.runtimes import TfliteRunner

    details = TfliteRunner(tflite_path, num_threads=1).interpreter.get_tensor_details()
    return any(d["dtype"] in (np.int8, np.int16) and d["quantization"][0] > 0 for d in details)


def _preprocessing(loaded, folder, overrides, warn: Warn) -> Preprocessing:
    """Flags win; then the manifest's preprocessing (what the TFLite was built and calibrated
    with); then the checkpoint's or the model's default (already resolved in `loaded`)."""
    from mixdeploy.preprocess import resolve_preprocessing

    built_with = folder.preprocessing()
    if built_with is None:
        return loaded.preprocessing
    chosen = resolve_preprocessing(built_with, MANIFEST_NAME, overrides).preprocessing
    if chosen != loaded.preprocessing and not overrides:
        warn(f"using the preprocessing of {MANIFEST_NAME} ({chosen.describe()}); "
             f"the model's own differs ({loaded.preprocessing.describe()})")
    return chosen


def _image_side(shape) -> tuple[int, int] | None:
    """(H, W) of an NHWC or NCHW image input shape; None when it is not one (or dynamic)."""
    dims = [int(d) if isinstance(d, (int, np.integer)) else -1 for d in shape]
    if len(dims) != 4:
        return None
    h, w = (dims[1], dims[2]) if dims[3] == 3 and dims[1] != 3 else (dims[2], dims[3])
    return (h, w) if h > 0 and w > 0 else None


def _check_input_sizes(tflite_paths, onnx_path, size: int) -> None:
    """Every model must take the images the preprocessing makes, or LiteRT fails mid-run."""
    from mixdeploy import runtimes

    shapes = [(path, runtimes.TfliteRunner(path, num_threads=1).interpreter.get_input_details()[0]["shape"])
              for path in tflite_paths]
    if onnx_path:
        shapes.append((onnx_path, runtimes.OnnxRunner(onnx_path).session.get_inputs()[0].shape))
    for path, shape in shapes:
        side = _image_side(shape)
        if side is not None and side != (size, size):
            raise MixdeployError(f"{path} takes {side[0]}x{side[1]} images, but the preprocessing makes {size}x{size} "
                                 f"(from --input-size, the manifest.json beside the model or the model's default): "
                                 f"pass --input-size {side[0]}, or check the model")


def write_reports(outcome: GateOutcome, report_dir, report_link: str | None = None) -> None:
    """parity.json, parity.md, parity-junit.xml and, when blame or a fix ran, blame.json."""
    from mixdeploy.atomic import write_json_atomic

    parity.write_reports(outcome.result, report_dir, report_link)
    if outcome.result.blame:
        write_json_atomic(Path(report_dir) / "blame.json", outcome.result.blame)
