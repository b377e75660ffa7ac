"""The whole export chain behind `mixdeploy export`: model -> ONNX -> rewrite -> TFLite -> parity.

The model is anything `load_model` takes; for an ONNX file the chain starts at its graph
(simplified) and parity is judged against onnxruntime on the original file.

Every stage is a function of another module; this one orders them and owns the output folder:
  - inputs are checked before any work (the output folder can be written, the data sources
    exist and hold finite images, labels fit the model);
  - one export at a time per folder (a lock file in it), and what a killed export left there
    (its staging folder) is removed, with a note, by the next one;
  - files are staged in a hidden folder inside the output folder and published together: the
    previous export's artifacts go (none stays beside a manifest that does not list it) and
    manifest.json comes last, so a manifest always describes exactly the files beside it;
  - a failed or interrupted export leaves the folder as it was, and no folder it created.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx

from mixdeploy.artifacts import ExportFolder
from mixdeploy.atomic import PART_SUFFIX, check_output_dir, make_dirs, remove_empty_dirs, write_bytes_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.manifest import MANIFEST_NAME, file_record, tool_versions, write_manifest
from mixdeploy.preprocess import PreprocessingOverrides
from mixdeploy.tflite.quantize import PRECISIONS   # the converter's: one list of what can be exported

Progress = Callable[[str, int, int], None]  # (stage description, done, total)


def default_out_dir(source: str) -> Path:
    """out/NAME: a file source by its stem (out/mbv2 for path/to/mbv2.onnx), others by name."""
    if source.lower().endswith((".onnx", ".pt", ".pth", ".safetensors")):
        return Path("out") / Path(source).stem
    return Path("out") / source.replace(":", "_")


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
    keep_float: tuple[str, ...] = ()         # ONNX nodes the int8 model computes in float
    input_layout: str = "nhwc"
    parity_data: str | None = None           # None: follows `calib`
    parity_count: int = 200
    opset: int = 17                          # PyTorch sources; an ONNX file keeps its own
    dynamic_batch: bool = False              # PyTorch sources; an ONNX file keeps its own batch dimension
    tuned_for: str | None = None             # auto takes the lowerings `mixdeploy tune` measured on this device
    tune_file: str | None = None             # ... or those in this tune file


def precisions_from_flags(int8: bool = False, fp16: bool = False, dynamic: bool = False,
                          int16x8: bool = False) -> tuple[str, ...]:
    """`export --int8 --fp16 ...` as precisions, in the order the converter makes them."""
    chosen = ["fp32"]  # the float TFLite is the reference the int8 model is judged against
    chosen += [name for name, on in (("fp16", fp16), ("dynamic", dynamic), ("int8", int8),
                                     ("int16x8", int16x8)) if on]
    return tuple(chosen)


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict
    files: dict[str, Path] = field(default_factory=dict)
    tuned: object | None = None              # policy.TunedChoices of --tuned-for/--tune-file


def _noop(stage: str, done: int, total: int) -> None:
    pass


STAGING_PREFIX = ".mixdeploy-export-"
LOCK_NAME = ".mixdeploy-export.lock"
# Every name an export may write: what a previous export (or a killed one) left under these
# names is replaced or removed when a new export publishes.
ARTIFACT_NAMES = ("model.onnx", "model.opt.onnx", *(f"model_{p}.tflite" for p in PRECISIONS), MANIFEST_NAME)


def run_export(options: ExportOptions, progress: Progress = _noop,
               warn: Callable[[str], None] = print) -> ExportResult:
    from mixdeploy.tune import manifest_record, tuned_export   # on use: it pulls in the lowering policy

    with tuned_export(options.tuned_for, options.tune_file, options.lowering, options.precisions) as tuned:
        for precision in options.precisions:
            if precision not in PRECISIONS:
                raise MixdeployError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
        out_dir = Path(options.out_dir)
        check_output_dir(out_dir, "-o")
        _check_data_sources(options, warn)
        with _output_folder(out_dir, warn) as staging:
            manifest, staged = _export_into(staging, options, progress, warn)
            if tuned is not None:   # where auto's lowerings came from, and which layers the tune file lacked
                manifest["tuned"] = manifest_record(tuned)
            files = _publish(out_dir, staged, manifest)
            files["manifest"] = out_dir / MANIFEST_NAME
            return ExportResult(out_dir=out_dir, manifest=manifest, files=files, tuned=tuned)


# ---------------------------------------------------------------- inputs, checked at the door

def _uses_calibration(options: ExportOptions) -> bool:
    return options.fmt == "tflite" and any(p in ("int8", "int16x8") for p in options.precisions)


def _check_data_sources(options: ExportOptions, warn) -> None:
    """--calib and --parity-data exist, are a known kind, and every image they give decodes to
    finite pixels: said before the model is even loaded, not after a minute of conversion."""
    from mixdeploy import data

    if options.fmt != "tflite":
        unused = [flag for flag, value in (("--calib", options.calib), ("--parity-data", options.parity_data))
                  if value is not None]
        if unused:
            warn(f"{' and '.join(unused)} not used: --format onnx makes no TFLite model to calibrate or check.")
        return
    if options.calib is not None and _uses_calibration(options):
        data.verify_index(data.index_images(options.calib, limit=options.calib_count, split="train"))
    parity_source = options.parity_data or options.calib
    if parity_source is not None:
        data.verify_index(data.index_images(parity_source, limit=options.parity_count, split="test"))


def _check_data_fits(loaded, options: ExportOptions) -> None:
    """Labelled parity data must use the model's classes, or its top-1 means nothing."""
    from mixdeploy import data

    parity_source = options.parity_data or options.calib
    if options.fmt == "tflite" and parity_source is not None:
        data.check_labels_match(data.index_images(parity_source, limit=options.parity_count, split="test"),
                                loaded.num_classes)


# ---------------------------------------------------------------- the output folder

@contextlib.contextmanager
def _output_folder(out_dir: Path, warn) -> Iterator[Path]:
    """Create (if needed) and lock `out_dir`, clear what a killed export left, yield a fresh
    staging folder in it. On failure the staging folder goes, and so does every folder this
    export created if it is still empty."""
    created = make_dirs(out_dir)
    try:
        with _locked(out_dir):
            _remove_leftovers(out_dir, warn)
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
            try:
                yield staging
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        remove_empty_dirs(created)
        raise


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """An exclusive flock on out_dir/.mixdeploy-export.lock: a second export into the folder
    fails at once, naming the first one's pid. The lock file is removed on release (a waiter
    that opened the removed file sees a different inode and opens again)."""
    path = out_dir / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise MixdeployError(f"another export (pid {holder}) is writing into {out_dir}: wait for it to "
                                 "finish, or export into another folder (-o)") from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            break   # a file system without locks (some NFS): export unlocked rather than not at all
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)   # the holder removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _remove_leftovers(out_dir: Path, warn) -> None:
    """Staging folders and half-written files of an export that was killed (kill -9, power
    loss): nobody else can be writing them, this process holds the folder's lock."""
    for path in sorted(out_dir.iterdir()):
        if path.name.startswith(STAGING_PREFIX) and path.is_dir():
            size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            shutil.rmtree(path, ignore_errors=True)
            warn(f"removed {path.name} ({size / 1e6:.1f} MB) from {out_dir}: the staging folder of an export "
                 "that was killed before it finished.")
        elif path.name.endswith(PART_SUFFIX) and any(path.name.startswith(f".{name}.") for name in ARTIFACT_NAMES):
            path.unlink()


def _previous_artifacts(out_dir: Path) -> set[str]:
    """Names of the artifact set now in `out_dir`: what its manifest lists, and any file with an
    export's name (a killed publish can leave them without a manifest)."""
    names = {name for name in ARTIFACT_NAMES if (out_dir / name).is_file()}
    try:
        listed = ExportFolder.read(out_dir).manifest.get("files", [])
    except MixdeployError:
        listed = []    # a manifest we cannot read: the known names are all we go by
    if isinstance(listed, list):
        names |= {str(r["path"]) for r in listed if isinstance(r, dict) and "path" in r}
    # only plain names of files in this folder: a manifest must not point the removal elsewhere
    return {n for n in names if Path(n).name == n and not n.startswith(".") and (out_dir / n).is_file()}


def _publish(out_dir: Path, staged: dict[str, Path], manifest: dict) -> dict[str, Path]:
    """Replace the folder's artifact set with the staged one. manifest.json goes first (the old
    set is no longer described) and comes back last (the new set is complete): a reader never
    sees a manifest beside files it does not describe. Renames within one file system."""
    previous = _previous_artifacts(out_dir)
    with contextlib.suppress(FileNotFoundError):
        (out_dir / MANIFEST_NAME).unlink()
    published = {}
    for key, path in staged.items():
        target = out_dir / path.name
        os.replace(path, target)
        published[key] = target
    for name in previous - {p.name for p in published.values()} - {MANIFEST_NAME}:
        (out_dir / name).unlink()
    manifest["files"] = [file_record(p, out_dir) for p in published.values()]
    write_manifest(out_dir, manifest)
    return published


def _export_into(staging: Path, options: ExportOptions, progress: Progress, warn) -> tuple[dict, dict]:
    from mixdeploy.flops import count_macs
    from mixdeploy.models import load_model
    from mixdeploy.onnx import policy
    from mixdeploy.onnx.rewrite import rewrite

    started = time.perf_counter()
    progress("load model", 0, 1)
    loaded = load_model(options.source, weights=options.weights, num_classes=options.num_classes,
                        preprocessing=options.preprocessing, factory_kwargs=options.factory_kwargs)
    _check_data_fits(loaded, options)
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
    staged["onnx"], manifest["stages"]["export"] = source_onnx(loaded, staging / "model.onnx", options, warn)

    progress(f"rewrite ({options.lowering})", 0, 1)
    rewritten = rewrite(onnx.load(staged["onnx"]), lowering=options.lowering,
                        runtime=policy.auto_runtime(options.precisions),
                        progress=lambda done, total, layer: progress(f"rewrite ({options.lowering})", done, total))
    opt_path = write_bytes_atomic(staging / "model.opt.onnx", rewritten.model.SerializeToString())
    staged["onnx_opt"] = opt_path
    manifest["stages"]["rewrite"] = rewritten.report.to_dict()

    if options.fmt == "tflite":
        image_set = _parity_images(loaded, options)
        with _reference_in_background(loaded, image_set.images) as reference:
            tflite_paths = _convert_all(staging, rewritten.model, loaded, options, manifest, progress, warn)
            staged.update(tflite_paths)
            progress(f"parity: {len(tflite_paths)} model(s) on {len(image_set.images)} images", 0, 1)
            manifest["parity"] = _quick_parity(loaded, tflite_paths, image_set, reference.result())
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    return manifest, staged


def source_onnx(loaded, path: Path, options, warn) -> tuple[Path, dict]:
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
    write_bytes_atomic(path, model.SerializeToString())
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
    calibration = calibration_images(loaded, options, warn) if needs_calibration else None
    results = {}
    manifest["stages"]["convert"] = {}
    for precision in options.precisions:
        path = staging / f"model_{precision}.tflite"
        converted = convert_onnx(
            model, path, precision=precision,
            calibration=calibration if precision in ("int8", "int16x8") else None,
            io_dtype=options.io_dtype, input_layout=options.input_layout, recipe=options.quant_recipe,
            keep_float=list(options.keep_float) if precision == "int8" else None,
            progress=lambda done, total, p=precision: progress(f"calibrate {p}", done, total),
        )
        results[f"tflite_{precision}"] = path
        manifest["stages"]["convert"][precision] = _as_dict(converted)
    if calibration is not None:
        from mixdeploy.tflite.recipe import get_recipe

        manifest["quantization"] = {"calibration_source": options.calib or "scikit-image samples",
                                    "calibration_images": int(len(calibration)),
                                    "io_dtype": options.io_dtype,
                                    "keep_float": list(options.keep_float),
                                    "recipe": get_recipe(options.quant_recipe).to_dict()}
    return results


def calibration_images(loaded, options, warn) -> np.ndarray:
    from mixdeploy import data

    if options.calib is None:
        warn("No --calib given: calibrating on photos bundled with scikit-image. "
             "Calibrate on your own data (--calib DIR) for the best int8 accuracy.")
        return data.default_calibration_images(loaded.preprocessing, options.calib_count)
    # Fashion-MNIST calibrates on its train split and checks parity on the test split.
    images = data.load_images(options.calib, loaded.preprocessing, limit=options.calib_count, split="train")
    return images.images


def _parity_images(loaded, options):
    """The images the parity summary checks: --parity-data (or --calib's test split), else a few
    photos bundled with scikit-image."""
    from mixdeploy import data

    source = options.parity_data or options.calib
    if source is None:
        images = data.default_calibration_images(loaded.preprocessing, min(options.parity_count, 32))
        return data.ImageSet(images=images, labels=None, class_names=None, source="scikit-image samples")
    return data.load_images(source, loaded.preprocessing, limit=options.parity_count, split="test")


class _Abandoned(Exception):
    """Raised inside the background reference run to stop it: the export failed or was interrupted."""


@contextlib.contextmanager
def _reference_in_background(loaded, images: np.ndarray):
    """The parity reference (PyTorch, or onnxruntime for an ONNX source) run on `images` in a
    worker thread while the TFLite conversion runs; yields its future (a parity.BackendRun).

    Why: the conversion (TensorFlow's import and float conversion, mostly one thread) leaves a core
    idle, and the reference (the biggest part of the parity summary at 224 px) needs nothing the
    conversion makes. It starts after the rewrite, so `auto`'s latency measurements have the
    machine to themselves. Its logits are the ones a run in the main thread gives (same runner,
    same thread count). On leaving the block the run is abandoned at its next batch (export
    failed or interrupted) and the worker is joined, so no thread outlives the export.
    """
    from concurrent.futures import ThreadPoolExecutor

    from mixdeploy import parity

    abandon = threading.Event()

    def stop_if_abandoned(*_progress):
        if abandon.is_set():
            raise _Abandoned()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixdeploy-parity-reference")
    future = pool.submit(lambda: parity.run_backends(loaded, (), images=images, progress=stop_if_abandoned)[0])
    try:
        yield future
    finally:
        abandon.set()
        pool.shutdown(wait=True)


def _quick_parity(loaded, tflite_paths, image_set, reference_run) -> dict:
    """Top-1 agreement, cosine and accuracy of each TFLite model against the reference (PyTorch or
    ONNX), whose run on `image_set` is `reference_run`."""
    from mixdeploy import parity

    # the one parity core: the same runners and metrics as `mixdeploy parity`
    paths = list(tflite_paths.values())
    _, *runs = parity.run_backends(loaded, paths, images=image_set.images, reference=reference_run)
    reference = reference_run.logits
    summary = {"reference": reference_run.backend, "data": image_set.source, "images": int(len(image_set.images)),
               "backends": {}}
    not_finite = {}
    for path, run in zip(paths, runs):
        metrics = parity.compare(reference, run.logits, labels=image_set.labels, backend=run.backend)
        summary["backends"][path.name] = metrics.to_dict()
        if metrics.non_finite_outputs:
            not_finite[path.name] = metrics.non_finite_outputs
    reference_bad = int(np.size(reference) - np.count_nonzero(np.isfinite(reference)))
    if reference_bad:
        not_finite[reference_run.backend + " (the reference)"] = reference_bad
    if not_finite:
        raise MixdeployError(
            "the exported models are not usable: NaN or infinite outputs on the parity images ("
            + ", ".join(f"{name}: {count} of {np.size(reference)} values" for name, count in not_finite.items())
            + "). Nothing was written. Check the weights and the preprocessing (--mean/--std), or the precision "
              "(fp16 overflows past 65504).", exit_code=1)
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
