"""The whole export chain behind `mixdeploy export`: model -> ONNX -> rewrite -> TFLite -> parity.

Every stage is a function of another module; this one only orders them, stages the
files in a temporary folder (so a failed run leaves nothing half-written in the output
folder) and collects each stage's facts into manifest.json.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from mixdeploy.errors import MixdeployError
from mixdeploy.manifest import MANIFEST_NAME, file_record, tool_versions, write_manifest
from mixdeploy.preprocess import PreprocessingOverrides

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int16x8")
Progress = Callable[[str, int, int], None]  # (stage description, done, total)


@dataclass
class ExportOptions:
    source: str
    out_dir: Path
    weights: str | None = None
    num_classes: int | None = None
    preprocessing: PreprocessingOverrides = field(default_factory=PreprocessingOverrides)
    fmt: str = "tflite"                      # "onnx" stops after the rewrite
    precisions: tuple[str, ...] = ("fp32",)
    lowering: str = "auto"
    calib: str | None = None                 # None: photos bundled with scikit-image
    calib_count: int = 64
    io_dtype: str = "int8"
    input_layout: str = "nhwc"
    parity_data: str | None = None           # None: follows `calib`
    parity_count: int = 200
    opset: int = 17
    dynamic_batch: bool = False


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    files: dict[str, Path] = field(default_factory=dict)


def _noop(stage: str, done: int, total: int) -> None:
    pass


def run_export(options: ExportOptions, progress: Progress = _noop,
               warn: Callable[[str], None] = print) -> ExportResult:
    for precision in options.precisions:
        if precision not in PRECISIONS:
            raise MixdeployError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mixdeploy-export-", dir=out_dir))
    try:
        manifest, staged = _export_into(staging, options, progress, warn)
        files = _publish(staging, out_dir, staged)
        manifest["files"] = [file_record(p, out_dir) for p in files.values()]
        write_manifest(out_dir, manifest)
        files["manifest"] = out_dir / MANIFEST_NAME
        return ExportResult(out_dir=out_dir, manifest=manifest, files=files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out_dir: Path, staged: dict[str, Path]) -> dict[str, Path]:
    """Move every finished artifact into the output folder (rename: atomic per file)."""
    published = {}
    for key, path in staged.items():
        target = out_dir / path.name
        os.replace(path, target)
        published[key] = target
    return published


def _export_into(staging: Path, options: ExportOptions, progress: Progress, warn) -> tuple[dict, dict]:
    from mixdeploy.flops import count_macs
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    started = time.perf_counter()
    progress("load model", 0, 1)
    loaded = load_model(options.source, weights=options.weights,
                        num_classes=options.num_classes, preprocessing=options.preprocessing)
    _warn_about_guessed_preprocessing(loaded, warn)
    size = loaded.preprocessing.input_size
    macs = count_macs(loaded.module, input_size=size)
    manifest: dict = {
        "model": _model_facts(loaded, macs),
        "preprocessing": loaded.preprocessing.to_dict(),
        "preprocessing_sources": dict(loaded.preprocessing_sources),
        "input_layout": options.input_layout.upper(),
        "tools": tool_versions(),
        "stages": {},
    }
    staged: dict[str, Path] = {}

    progress("export ONNX", 0, 1)
    exported = export_onnx(loaded.module, size, staging / "model.onnx",
                           opset=options.opset, dynamic_batch=options.dynamic_batch)
    staged["onnx"] = Path(exported.path)
    manifest["stages"]["export"] = _as_dict(exported)

    progress(f"rewrite ({options.lowering})", 0, 1)
    # `auto` measures each MixConv lowering on the runtime that will run it: int8 and fp32
    # kernels rank the lowerings differently, and the int8 model is the one users ship.
    runtime = "int8" if "int8" in options.precisions else "fp32"
    rewritten = rewrite(onnx.load(staged["onnx"]), lowering=options.lowering, runtime=runtime,
                        progress=lambda done, total, layer: progress(f"rewrite ({options.lowering})", done, total))
    opt_path = staging / "model.opt.onnx"
    onnx.save(rewritten.model, opt_path)
    staged["onnx_opt"] = opt_path
    manifest["stages"]["rewrite"] = rewritten.report.to_dict()

    if options.fmt == "tflite":
        tflite_paths = _convert_all(staging, rewritten.model, loaded, options, manifest, progress, warn)
        staged.update(tflite_paths)
        manifest["parity"] = _quick_parity(loaded, tflite_paths, options, progress, warn)
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    return manifest, staged


def _warn_about_guessed_preprocessing(loaded, warn) -> None:
    guessed = loaded.preprocessing_guesses()
    if guessed:
        warn(f"{loaded.weights_path} names no preprocessing; using the {loaded.name} default for "
             f"{', '.join(guessed)} ({loaded.preprocessing.describe()}). Calibration, parity and the manifest "
             "follow it: if the checkpoint was trained otherwise, pass --interpolation/--crop-pct/--mean/--std "
             "or --preprocess config.json.")


def _convert_all(staging, model, loaded, options, manifest, progress, warn) -> dict[str, Path]:
    from mixdeploy.tflite.convert import convert_onnx

    needs_calibration = any(p in ("int8", "int16x8") for p in options.precisions)
    calibration = _calibration_images(loaded, options, warn) if needs_calibration else None
    results = {}
    manifest["stages"]["convert"] = {}
    for precision in options.precisions:
        path = staging / f"model_{precision}.tflite"
        converted = convert_onnx(
            model, path, precision=precision,
            calibration=calibration if precision in ("int8", "int16x8") else None,
            io_dtype=options.io_dtype, input_layout=options.input_layout,
            progress=lambda done, total, p=precision: progress(f"calibrate {p}", done, total),
        )
        results[f"tflite_{precision}"] = path
        manifest["stages"]["convert"][precision] = _as_dict(converted)
    if calibration is not None:
        manifest["quantization"] = {"calibration_source": options.calib or "scikit-image samples",
                                    "calibration_images": int(len(calibration)),
                                    "io_dtype": options.io_dtype}
    return results


def _calibration_images(loaded, options, warn) -> np.ndarray:
    from mixdeploy import data

    if options.calib is None:
        warn("No --calib given: calibrating on photos bundled with scikit-image. "
             "Calibrate on your own data (--calib DIR) for the best int8 accuracy.")
        return data.default_calibration_images(loaded.preprocessing, options.calib_count)
    # Fashion-MNIST calibrates on its train split and checks parity on the test split.
    images = data.load_images(options.calib, loaded.preprocessing, limit=options.calib_count, split="train")
    return images.images


def _quick_parity(loaded, tflite_paths, options, progress, warn) -> dict:
    """Top-1 agreement, cosine and accuracy of each TFLite model against PyTorch."""
    from mixdeploy import data, parity, runtimes

    source = options.parity_data or options.calib
    if source is None:
        images = data.default_calibration_images(loaded.preprocessing, min(options.parity_count, 32))
        image_set = data.ImageSet(images=images, labels=None, class_names=None, source="scikit-image samples")
    else:
        image_set = data.load_images(source, loaded.preprocessing, limit=options.parity_count, split="test")
    progress("parity: PyTorch", 0, 1)
    reference = runtimes.TorchRunner(loaded.module).run(image_set.images)
    summary = {"data": image_set.source, "images": int(len(image_set.images)), "backends": {}}
    for key, path in tflite_paths.items():
        progress(f"parity: {path.name}", 0, 1)
        logits = runtimes.TfliteRunner(path).run(image_set.images)
        metrics = parity.compare(reference, logits, labels=image_set.labels)
        summary["backends"][path.name] = metrics.to_dict()
    if image_set.labels is not None:
        summary["reference_top1"] = float((reference.argmax(1) == image_set.labels).mean())
    return summary


def _model_facts(loaded, macs) -> dict:
    return {
        "source": loaded.source,
        "name": loaded.name,
        "num_classes": loaded.num_classes,
        "weights_sha256": loaded.weights_sha256,
        "params": int(macs.params),
        "macs": int(macs.total),
        "macs_conv_linear": int(macs.conv_linear_only),
    }


def _as_dict(result) -> dict:
    """A stage result as manifest facts; file paths become names (the staging folder is gone)."""
    facts = result.to_dict() if hasattr(result, "to_dict") else _plain_fields(result)
    if "path" in facts:
        facts["path"] = Path(facts["path"]).name
    return facts


def _plain_fields(result) -> dict:
    import dataclasses

    out = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, (str, int, float, bool, type(None), dict, list, tuple)):
            out[f.name] = value
        elif isinstance(value, Path):
            out[f.name] = value.name
    return out
