"""`mixdeploy parity`: PyTorch vs ONNX vs TFLite on a dataset, gated by thresholds (exit 1 on violation).

When an int8 model misses a threshold, `--blame` (default) ranks its layers by int8 error;
`--keep-float auto|NODE,...` converts again with those layers left in float and shows what
that costs in size and LiteRT latency, and what it buys in parity.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import numpy as np
from rich.markup import escape

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout
from mixdeploy.atomic import scratch_dir
from mixdeploy.commands._options import TimmStyleCommand, preprocessing_options
from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import Preprocessing

MANIFEST_NAME = "manifest.json"
LOG_WIDTH = 160  # CI logs are not terminals: rich would wrap the table at 80 columns


def _console():
    import sys

    from rich.console import Console

    return stdout if sys.stdout.isatty() else Console(width=LOG_WIDTH)


def _manifest_next_to(paths) -> dict:
    """manifest.json beside the first TFLite file that has one (written by `mixdeploy export`)."""
    for path in paths:
        candidate = Path(path).parent / MANIFEST_NAME
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except ValueError as err:
                raise MixdeployError(f"{candidate} is not valid JSON ({err}); export again or remove it") from None
    return {}


def _preprocessing(loaded, manifest: dict, overrides) -> Preprocessing:
    """Flags win; then the manifest's preprocessing (what the TFLite was built and calibrated
    with); then the checkpoint's or the model's default (already resolved in `loaded`)."""
    from rich.markup import escape

    from mixdeploy.preprocess import resolve_preprocessing

    if not isinstance(manifest.get("preprocessing"), dict):
        return loaded.preprocessing
    resolved = resolve_preprocessing(Preprocessing.from_dict(manifest["preprocessing"]), MANIFEST_NAME, overrides)
    chosen = resolved.preprocessing
    if chosen != loaded.preprocessing and not overrides:
        stderr.print(escape(f"using the preprocessing of {MANIFEST_NAME} ({chosen.describe()}); "
                            f"the model's own differs ({loaded.preprocessing.describe()})"), style="yellow")
    return chosen


def _check_outputs(report_dir, keep_float, tflite_paths) -> None:
    """Where results go is checked before the run, not after it (when they would be lost)."""
    from mixdeploy.atomic import check_output_dir

    if report_dir:
        check_output_dir(report_dir, "--report")
    if keep_float and not report_dir and tflite_paths:
        check_output_dir(Path(tflite_paths[0]).parent, "--keep-float (writes beside the int8 model)")


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


def _is_full_integer(path) -> bool:
    from mixdeploy.runtimes import TfliteRunner

    runner = TfliteRunner(path, num_threads=1)
    details = runner.interpreter.get_tensor_details()
    return any(d["dtype"] in (np.int8, np.int16) and d["quantization"][0] > 0 for d in details)


def _float_onnx(onnx_path, tflite_path, loaded, preprocessing, workdir: Path) -> Path:
    """The ONNX graph the int8 model was converted from: --onnx, else model.opt.onnx beside it, else
    the ONNX source itself or an export of the PyTorch model."""
    if onnx_path:
        return Path(onnx_path)
    for name in ("model.opt.onnx", "model.onnx"):
        beside = Path(tflite_path).parent / name
        if beside.is_file():
            return beside
    if loaded.module is None:   # the model was given as an ONNX file
        return Path(loaded.onnx_path)
    from mixdeploy.onnx.export import export_onnx

    return Path(export_onnx(loaded.module, preprocessing.input_size, workdir / "model.onnx").path)


def _calibration(source, data_source, preprocessing, count, images) -> np.ndarray:
    from mixdeploy import data

    if source:
        return data.load_images(source, preprocessing, limit=count, split="train").images
    if data_source.lower().replace("_", "-") == "fashion-mnist":
        return data.load_images(data_source, preprocessing, limit=count, split="train").images
    return images.images[:count]


def _run_blame(result, int8_paths, args, loaded, preprocessing, images, progress, workdir: Path, force=False):
    """Blame the first failing int8 model (or, when `force`d by --keep-float auto, the first int8 model)."""
    from mixdeploy import blame

    # by file, not backend name: `--backend arm64` names its backends arm64-CPU:FILE
    failing = {m.path for m in result.backends if any(c.backend == m.backend for c in result.violations)}
    targets = [p for p in int8_paths if str(p) in failing] or (list(int8_paths) if force else [])
    if not targets:
        return None
    target = targets[0]
    onnx_file = _float_onnx(args["onnx_path"], target, loaded, preprocessing, workdir)
    calibration = _calibration(args["calibration"], args["data_source"], preprocessing, args["calibration_count"], images)
    progress("blame: QuantizationDebugger", 0, 1)
    report = blame.blame_int8(onnx_file, calibration, images.images[: args["blame_images"]],
                              input_layout=args["input_layout"])
    progress("blame: QuantizationDebugger", 1, 1)
    kept = not onnx_file.is_relative_to(workdir)   # an export made for blame goes with the temporary folder
    out = {"tflite": str(target), "onnx": str(onnx_file) if kept else f"exported from {loaded.name} (not kept)",
           **report.to_dict()}
    return report, out, onnx_file, calibration, target


def _keep_float(spec: str, report, onnx_file, calibration, target, args, run_parity, progress):
    """Re-export keeping `spec`'s nodes in float; `run_parity(paths, onnx)` checks the new model."""
    from mixdeploy import blame

    if spec.strip().lower() == "auto":
        if report is None:
            raise MixdeployError("--keep-float auto needs a blame report: it is made only when an int8 model "
                                 "misses a threshold (and --blame is on); name the nodes instead")
        nodes = blame.suggest_keep_float(report)
    else:
        nodes = [n.strip() for n in spec.split(",") if n.strip()]
    out_path = Path(args["report_dir"] or Path(target).parent) / f"{Path(target).stem}_keepfloat.tflite"
    progress("keep-float: convert", 0, 1)
    result = blame.reexport_keep_float(onnx_file, nodes, calibration, out_path, target,
                                       io_dtype=args["io_dtype"], input_layout=args["input_layout"])
    progress("keep-float: convert", 1, 1)
    rerun = run_parity([out_path], None)
    return result, rerun


@click.command(cls=TimmStyleCommand)
@click.argument("model")
@click.option("--tflite", "tflite_paths", multiple=True, type=click.Path(dir_okay=False),
              help="TFLite model(s) to check (repeat the option).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False), help="ONNX model to check too.")
@click.option("--weights", type=click.Path(dir_okay=False), help="State dict or checkpoint file.")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier size (default: from the weights).")
@preprocessing_options
@click.option("--data", "data_source", required=True,
              help="fashion-mnist, an image folder (ImageFolder or flat), a list file (.txt: `path label` lines) or a .npy.")
@click.option("--limit", type=click.IntRange(min=1), help="Use at most this many images.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False),
              help="Write parity.json, parity.md, parity-junit.xml (and blame.json) into this folder.")
@click.option("--report-link", default=None,
              help="Path or URL of the HTML report (`mixdeploy report`) that parity-junit.xml links to "
                   "(default: the parity.md beside it).")
@click.option("--min-top1-agreement", type=click.FloatRange(0, 1), default=0.99, show_default=True)
@click.option("--max-top1-drop", type=click.FloatRange(min=0), default=0.5, show_default=True, help="Points.")
@click.option("--min-cosine", type=click.FloatRange(-1, 1), default=None, help="Mean logit cosine.")
@click.option("--min-sqnr-db", type=float, default=None, help="Logit SQNR in dB.")
@click.option("--blame/--no-blame", default=True, show_default=True,
              help="Rank the layers of a failing int8 model by quantization error.")
@click.option("--keep-float", "keep_float", default=None,
              help="Re-export the failing int8 model keeping these ONNX nodes in float ('auto': blame's worst).")
@click.option("--calibration", default=None,
              help="Calibration images for blame/--keep-float (default: the training split of --data).")
@click.option("--calibration-count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--blame-images", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Threads per runtime.")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[auto|local|ADDRESS]",
              help="Run on a Ray cluster (pip install -e '.[ray]'): bare --ray or 'auto' joins the running one, "
                   "'local' starts one here, or give HOST:PORT / ray://HOST:10001. Workers read --data themselves.")
@click.option("--backend", default="host", show_default=True,
              help="Who runs the TFLite models: host (LiteRT here) or arm64[:CPU], the ARM64 twin "
                   "(LiteRT's aarch64 kernels under qemu; reports outputs that differ from the host's).")
@click.option("--no-progress", is_flag=True)
def parity(model, tflite_paths, onnx_path, weights, num_classes, preprocessing, data_source, limit, as_json, report_dir,
           report_link, min_top1_agreement, max_top1_drop, min_cosine, min_sqnr_db, blame, keep_float, calibration,
           calibration_count, blame_images, batch_size, threads, ray_address, backend, no_progress):
    """Check that TFLite (and ONNX) models compute what MODEL computes in PyTorch.

    Exit 0 when every backend meets every threshold, 1 when one does not, 2 for bad input.
    """
    from mixdeploy import data
    from mixdeploy import parity as parity_lib
    from mixdeploy.atomic import write_json_atomic
    from mixdeploy.bench import twin
    from mixdeploy.models import load_model

    if report_link and not report_dir:
        raise MixdeployError("--report-link names the report that parity-junit.xml links to: add --report DIR")
    if not tflite_paths and not onnx_path:
        raise MixdeployError("nothing to compare: pass --tflite FILE (repeatable) and/or --onnx FILE")
    tflite_runner = twin.parity_runner(backend)
    if tflite_runner and ray_address:
        raise MixdeployError("--backend arm64 runs the twin on this machine, not on Ray workers: drop --ray")
    for path in [*tflite_paths, *([onnx_path] if onnx_path else [])]:
        if not Path(path).is_file():
            raise MixdeployError(f"file not found: {path}")
    _check_outputs(report_dir, keep_float, tflite_paths)
    loaded = load_model(model, weights=weights, num_classes=num_classes, preprocessing=preprocessing)
    manifest = _manifest_next_to(tflite_paths)
    loaded.preprocessing = _preprocessing(loaded, manifest, preprocessing)
    preprocessing = loaded.preprocessing
    _check_input_sizes(tflite_paths, onnx_path, preprocessing.input_size)
    index = data.index_images(data_source, limit=limit)
    data.check_labels_match(index, loaded.num_classes)
    thresholds = parity_lib.Thresholds(min_top1_agreement=min_top1_agreement, max_top1_drop=max_top1_drop,
                                       min_cosine=min_cosine, min_sqnr_db=min_sqnr_db)
    args = {"onnx_path": onnx_path, "data_source": data_source, "calibration": calibration,
            "calibration_count": calibration_count, "blame_images": blame_images, "report_dir": report_dir,
            "input_layout": str(manifest.get("input_layout", "nhwc")).lower(),
            "io_dtype": (manifest.get("quantization") or {}).get("io_dtype", "int8")}
    if ray_address:
        from mixdeploy.parity_ray import import_ray

        import_ray()   # before any work: a missing Ray is a set-up error, said at once
    # Locally every image is loaded here; with --ray the workers load them, and this process
    # loads only the few that blame may need.
    images = None if ray_address else index.load(preprocessing)

    # blame's ONNX export and the like: one temporary folder, removed however the run ends
    with stage_progress(enabled=not no_progress and not as_json) as progress, \
            tempfile.TemporaryDirectory(prefix="mixdeploy-parity-", dir=scratch_dir()) as workdir:
        workdir = Path(workdir)

        def run_parity(paths, onnx):
            if ray_address:
                from mixdeploy.parity_ray import run_parity_ray

                return run_parity_ray(loaded, paths, onnx, index, thresholds=thresholds, address=ray_address,
                                      progress=progress, batch_size=batch_size, num_threads=threads)
            return parity_lib.run_parity(loaded, paths, onnx_path=onnx, images=images, thresholds=thresholds,
                                         progress=progress, batch_size=batch_size, num_threads=threads,
                                         tflite_runner=tflite_runner)

        result = run_parity(tflite_paths, onnx_path)
        int8_paths = [p for p in tflite_paths if _is_full_integer(p)]
        auto_keep = bool(keep_float) and keep_float.strip().lower() == "auto"
        wants_blame = (blame and not result.passed) or auto_keep
        if images is None and (keep_float or (wants_blame and int8_paths)):
            images = index.load(preprocessing, stop=max(blame_images, calibration_count))
        blamed = _run_blame(result, int8_paths, args, loaded, preprocessing, images, progress, workdir,
                            force=auto_keep) if wants_blame and int8_paths else None
        report, kept = None, None
        if blamed:
            report, result.blame, onnx_file, calib, target = blamed
        if keep_float:
            if not int8_paths:
                raise MixdeployError("--keep-float applies to int8 TFLite models; none was given")
            if not blamed:
                target = int8_paths[0]
                onnx_file = _float_onnx(onnx_path, target, loaded, preprocessing, workdir)
                calib = _calibration(calibration, data_source, preprocessing, calibration_count, images)
            kept = _keep_float(keep_float, report, onnx_file, calib, target, args, run_parity, progress)

    if kept:
        tradeoff, rerun = kept
        result.blame = {**(result.blame or {}), "keep_float": {**tradeoff.to_dict(),
                                                               "parity": rerun.backends[0].to_dict(),
                                                               "passed": rerun.passed}}
    if report_dir:
        parity_lib.write_reports(result, report_dir, report_link)
        if result.blame:
            write_json_atomic(Path(report_dir) / "blame.json", result.blame)
    if as_json:
        print_json(result.to_dict())
    else:
        out = _console()
        out.print(escape(parity_lib.describe_data(result)), soft_wrap=True)
        out.print(parity_lib.rich_table(result))
        if result.cluster:
            out.print(escape(f"ray: {parity_lib.cluster_summary(result.cluster)}"))
        for m in result.backends:
            if m.vs_host_litert:
                out.print(escape(f"{m.backend}: {parity_lib.describe_vs_host(m.vs_host_litert)}"))
        for check in result.violations:
            out.print(f"[red]FAIL[/red] {escape(check.backend)}: {escape(check.message)}")
        if report is not None:
            out.print(report.rich_table())
        if kept:
            tradeoff, rerun = kept
            m = rerun.backends[0]
            out.print(
                escape(f"keep-float {', '.join(tradeoff.keep_float)} -> {tradeoff.path}: size ")
                + f"{tradeoff.baseline.file_size / 1e6:.2f} -> {tradeoff.candidate.file_size / 1e6:.2f} MB, LiteRT latency "
                f"{tradeoff.baseline.latency_ms:.2f} -> {tradeoff.candidate.latency_ms:.2f} ms (x{tradeoff.latency_ratio:.2f}); "
                f"agreement {m.top1_agreement * 100:.2f}%"
                + (f", top-1 drop {m.top1_drop_points:.2f} pts" if m.top1_drop_points is not None else "")
                + (" [green]passes[/green]" if rerun.passed else " [red]still fails[/red]"))
        out.print("[green]parity: PASS[/green]" if result.passed else "[red]parity: FAIL[/red]")
    if not result.passed:
        click.get_current_context().exit(1)
