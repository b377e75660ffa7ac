"""The whole export chain behind `mixdeploy export`: model -> ONNX -> rewrite -> TFLite -> parity.

The model is anything `load_model` takes; for an ONNX file the chain starts at its graph
(simplified) and parity is judged against onnxruntime on the original file.

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
    factory_kwargs: dict | None = None       # keyword arguments for a `pkg.module:factory` source
    num_classes: int | None = None
    preprocessing: PreprocessingOverrides = field(default_factory=PreprocessingOverrides)
    fmt: str = "tflite"                      # "onnx" stops after the rewrite
    precisions: tuple[str, ...] = ("fp32",)
    lowering: str = "auto"
    calib: str | None = None                 # None: photos bundled with scikit-image
    calib_count: int = 64
    quant_recipe: str = "default"            # mixdeploy.tflite.recipe.RECIPES
    io_dtype: str = "int8"
    input_layout: str = "nhwc"
    parity_data: str | None = None           # None: follows `calib`
    parity_count: int = 200
    opset: int = 17                          # PyTorch sources; an ONNX file keeps its own
    dynamic_batch: bool = False              # PyTorch sources; an ONNX file keeps its own batch dimension


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
    from mixdeploy.onnx.rewrite import rewrite

    started = time.perf_counter()
    progress("load model", 0, 1)
    loaded = load_model(options.source, weights=options.weights, num_classes=options.num_classes,
                        preprocessing=options.preprocessing, factory_kwargs=options.factory_kwargs)
    _warn_about_guessed_preprocessing(loaded, warn)
    macs = count_macs(loaded)
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
    staged["onnx"], manifest["stages"]["export"] = _source_onnx(loaded, staging / "model.onnx", options, warn)

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


def _source_onnx(loaded, path: Path, options, warn) -> tuple[Path, dict]:
    """model.onnx, what the rewrite starts from: exported from the PyTorch module, or the user's
    ONNX graph (at its static HxW) simplified with onnxsim."""
    from mixdeploy.onnx.export import export_onnx, simplify_onnx
    from mixdeploy.onnx.graph import op_histogram

    if loaded.module is not None:
        exported = export_onnx(loaded.module, loaded.preprocessing.input_size, path,
                               opset=options.opset, dynamic_batch=options.dynamic_batch)
        return Path(exported.path), _as_dict(exported)
    if options.dynamic_batch:
        warn(f"--dynamic-batch applies to PyTorch sources; {loaded.name} keeps its own batch dimension.")
    model = simplify_onnx(loaded.onnx_model)
    onnx.save(model, path)
    image = model.graph.input[0].type.tensor_type.shape.dim
    return path, {"path": path.name,   # the source file and its sha256 are in the manifest's "model"
                  "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
                  "input_shape": [d.dim_value if d.HasField("dim_value") else d.dim_param for d in image],
                  "op_histogram": op_histogram(model), "simplified": model is not loaded.onnx_model}


def _warn_about_guessed_preprocessing(loaded, warn) -> None:
    guessed = loaded.preprocessing_guesses()
    if guessed:
        default = loaded.preprocessing_sources[guessed[0]]
        warn(f"{loaded.weights_path or loaded.source} names no preprocessing; using the {default} for "
             f"{', '.join(guessed)} ({loaded.preprocessing.describe()}). Calibration, parity and the manifest "
             "follow it: if the model was trained otherwise, pass --interpolation/--crop-pct/--mean/--std "
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
            io_dtype=options.io_dtype, input_layout=options.input_layout, recipe=options.quant_recipe,
            progress=lambda done, total, p=precision: progress(f"calibrate {p}", done, total),
        )
        results[f"tflite_{precision}"] = path
        manifest["stages"]["convert"][precision] = _as_dict(converted)
    if calibration is not None:
        from mixdeploy.tflite.recipe import get_recipe

        manifest["quantization"] = {"calibration_source": options.calib or "scikit-image samples",
                                    "calibration_images": int(len(calibration)),
                                    "io_dtype": options.io_dtype,
                                    "recipe": get_recipe(options.quant_recipe).to_dict()}
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
    """Top-1 agreement, cosine and accuracy of each TFLite model against the reference (PyTorch or ONNX)."""
    from mixdeploy import data, parity, runtimes

    source = options.parity_data or options.calib
    if source is None:
        images = data.default_calibration_images(loaded.preprocessing, min(options.parity_count, 32))
        image_set = data.ImageSet(images=images, labels=None, class_names=None, source="scikit-image samples")
    else:
        image_set = data.load_images(source, loaded.preprocessing, limit=options.parity_count, split="test")
    runner = runtimes.make_runner(loaded)   # PyTorch, or onnxruntime on the user's original ONNX file
    progress(f"parity: {runner.name}", 0, 1)
    reference = runner.run(image_set.images)
    summary = {"reference": runner.name, "data": image_set.source, "images": int(len(image_set.images)),
               "backends": {}}
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
        **loaded.source_facts(),
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
