"""litert-torch 0.10: PyTorch -> .tflite directly (PT2E int8), run in LiteRT like ours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from peers_lib.common import DRIVERS, Stopwatch, package_version, run_logged, save_calibration, venv_python, write_facts

VENV = ".venv-litert-torch"


def convert_int8(checkpoint: str, calibration_nchw: np.ndarray, out_dir: Path, input_size: int | None,
                 with_float: bool) -> Path:
    python = venv_python(VENV)
    calib = save_calibration(calibration_nchw, out_dir / "calib_nchw.npy")
    int8, fp32 = out_dir / "model_int8.tflite", (out_dir / "model_fp32.tflite" if with_float else None)
    cmd = [python, DRIVERS / "litert_torch_convert.py", "--model", checkpoint, "--calib", calib, "--out-int8", int8]
    cmd += ["--input-size", str(input_size)] if input_size else []
    cmd += ["--out-fp32", fp32] if fp32 else []
    log = out_dir / "convert.log"
    with Stopwatch() as watch:
        stdout = run_logged(cmd, log)
    calib.unlink()
    times = json.loads(stdout.strip().splitlines()[-1])
    # The int8 time is the driver's own: with --out-fp32 the same run converted the float model first.
    seconds = times["int8_seconds"] if fp32 else watch.seconds
    write_facts(int8, "litert-torch", package_version(VENV, "litert-torch"), seconds, len(calibration_nchw), fp32, log)
    return int8


def run_logits(model_path: Path, images_nchw: np.ndarray) -> np.ndarray:
    from mixdeploy.runtimes import TfliteRunner

    return TfliteRunner(model_path, name="litert-torch").run(images_nchw)
