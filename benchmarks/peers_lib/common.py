"""What every peer shares: where its venv lives, running a driver there, the conversion record."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from mixdeploy.atomic import write_json_atomic, write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
DRIVERS = Path(__file__).resolve().parent / "drivers"
# Where the peer venvs live: this checkout, or MIXDEPLOY_PEER_VENVS (a folder holding .venv-*/ already set
# up, e.g. another checkout's: the venvs are ~8 GB, one set serves every checkout).
VENV_ROOT = Path(os.environ.get("MIXDEPLOY_PEER_VENVS") or ROOT)
SETUP_HINT = "run `bash benchmarks/setup_peers.sh` (or point MIXDEPLOY_PEER_VENVS at a folder holding the .venv-*/)"


class PeerError(Exception):
    """A peer could not convert or run the model; str() is the one-line reason for the table."""


def venv_dir(venv: str) -> Path:
    return VENV_ROOT / venv


def venv_python(venv: str) -> Path:
    python = venv_dir(venv) / "bin" / "python"
    if not python.exists():
        raise PeerError(f"{venv_dir(venv)}/ is missing: {SETUP_HINT}")
    return python


def package_version(venv: str | None, package: str) -> str | None:
    """The installed version of `package` in venv_dir(venv) (None: this interpreter), without running it."""
    if venv is None:
        from importlib import metadata

        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None
    stem = package.replace("-", "_")
    for info in sorted(venv_dir(venv).glob(f"lib/python*/site-packages/{stem}-*.dist-info")):
        return info.name[len(stem) + 1:-len(".dist-info")]
    return None


def driver_env() -> dict:
    # The drivers import mixdeploy.models from this checkout; the peer venvs need not install it.
    return {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def run_logged(cmd: list, log: Path, cwd: Path | None = None) -> str:
    """Run `cmd`, keep its whole output in `log`; a failure raises PeerError with its last error line."""
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=cwd or ROOT, env=driver_env())
    write_text_atomic(log, f"$ {' '.join(map(str, cmd))}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    if result.returncode != 0:
        raise PeerError(f"{Path(str(cmd[0])).name} exited {result.returncode}: {last_error_line(result.stderr or result.stdout)} "
                        f"(log: {log})")
    return result.stdout


def last_error_line(text: str) -> str:
    """The line of a traceback or tool log that names the error, shortened for a table cell."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line[:300]
    return (lines[-1] if lines else "no output")[:300]


def save_calibration(images_nchw: np.ndarray, path: Path) -> Path:
    images = np.ascontiguousarray(images_nchw, dtype=np.float32)
    if images.ndim != 4 or images.shape[1] != 3:
        raise PeerError(f"calibration images must be N,3,H,W float32, got {images.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, images)
    return path


def facts_path(model_path: Path) -> Path:
    return Path(str(model_path) + ".json")


def write_facts(model_path: Path, peer: str, version: str | None, seconds: float, calibration_images: int,
                fp32_model: Path | None = None, log: Path | None = None) -> None:
    write_json_atomic(facts_path(model_path), {
        "peer": peer, "version": version, "model": str(model_path), "seconds": round(seconds, 2),
        "file_bytes": model_path.stat().st_size, "calibration_images": calibration_images,
        "fp32_model": str(fp32_model) if fp32_model else None, "log": str(log) if log else None})


def read_facts(model_path: Path) -> dict:
    return json.loads(facts_path(Path(model_path)).read_text())


class Stopwatch:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def export_plain_onnx(checkpoint: str, input_size: int | None, path: Path, dynamic_batch: bool = False):
    """The checkpoint as a user hands it to an ONNX-based tool: torch.onnx.export + onnxsim, none
    of mixdeploy's rewrites. -> the LoadedModel (its preprocessing says the mean/std)."""
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx

    loaded = load_model(checkpoint, input_size=input_size)
    export_onnx(loaded.module, loaded.preprocessing.input_size, path, dynamic_batch=dynamic_batch)
    return loaded
