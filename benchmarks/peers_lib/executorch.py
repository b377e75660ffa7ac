"""ExecuTorch 1.5 with XNNPACK: PyTorch -> PT2E int8 -> .pte, run by executorch.runtime, batch 1.

Both steps run in .venv-executorch (torch 2.13.0 there too): the conversion as a driver
script, the runtime as a small server process (drivers/executorch_serve.py) that the
accuracy run feeds images through a pipe and the latency run asks to time one execute.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import numpy as np

from peers_lib.common import (DRIVERS, PeerError, Stopwatch, driver_env, last_error_line, package_version, run_logged,
                              save_calibration, venv_python, write_facts)

VENV = ".venv-executorch"
CHUNK = 64  # images per LOGI request


def convert_int8(checkpoint: str, calibration_nchw: np.ndarray, out_dir: Path, input_size: int | None,
                 with_float: bool) -> Path:
    python = venv_python(VENV)
    calib = save_calibration(calibration_nchw, out_dir / "calib_nchw.npy")
    pte, log = out_dir / "model_int8.pte", out_dir / "convert.log"
    cmd = [python, DRIVERS / "executorch_convert.py", "--model", checkpoint, "--calib", calib, "--out", pte]
    cmd += ["--input-size", str(input_size)] if input_size else []
    with Stopwatch() as watch:
        stdout = run_logged(cmd, log)
    calib.unlink()
    if json.loads(stdout.strip().splitlines()[-1])["delegate_calls"] == 0:
        raise PeerError(f"XnnpackPartitioner delegated nothing: the .pte would run portable kernels (log: {log})")
    write_facts(pte, "executorch", package_version(VENV, "executorch"), watch.seconds, len(calibration_nchw), None, log)
    return pte


class Session:
    """One .pte loaded in a server process with `threads` threads; use as a context manager."""

    def __init__(self, model_path: Path, threads: int = 1):
        cmd = [str(venv_python(VENV)), str(DRIVERS / "executorch_serve.py"), "--model", str(model_path),
               "--threads", str(threads)]
        self._stderr = open(Path(model_path).with_suffix(f".serve{threads}.log"), "w+")
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                      env=driver_env())
        hello = self._proc.stdout.readline()
        if not hello:
            raise PeerError(f"executorch runtime did not start: {self._failure()}")
        facts = json.loads(hello)
        self.input_shape, self.output_shape, self.threads = facts["input_shape"], facts["output_shape"], facts["threads"]

    def logits(self, images_nchw: np.ndarray) -> np.ndarray:
        rows = []
        for start in range(0, len(images_nchw), CHUNK):
            chunk = np.ascontiguousarray(images_nchw[start:start + CHUNK], np.float32)
            if list(chunk.shape[1:]) != self.input_shape[1:]:
                raise PeerError(f"images are {chunk.shape[1:]}, the .pte wants {self.input_shape[1:]}")
            self._send(b"LOGI" + struct.pack("<i", len(chunk)) + chunk.tobytes())
            classes = int(np.prod(self.output_shape[1:]))
            rows.append(np.frombuffer(self._receive(4 * len(chunk) * classes), np.float32).reshape(len(chunk), classes))
        return np.concatenate(rows)

    def time_one_ms(self) -> float:
        """One execute of the last image sent (zeros if none), timed inside the server."""
        self._send(b"TIME")
        return struct.unpack("<d", self._receive(8))[0]

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self._send(b"QUIT")
                self._proc.wait(timeout=30)
            except (PeerError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()
        self._stderr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _send(self, payload: bytes) -> None:
        try:
            self._proc.stdin.write(payload)
            self._proc.stdin.flush()
        except BrokenPipeError:
            raise PeerError(f"executorch runtime died: {self._failure()}") from None

    def _receive(self, n: int) -> bytes:
        data = self._proc.stdout.read(n)
        if len(data) != n:
            raise PeerError(f"executorch runtime died: {self._failure()}")
        return data

    def _failure(self) -> str:
        self._proc.wait()
        self._stderr.seek(0)
        return f"exit {self._proc.returncode}: {last_error_line(self._stderr.read())}"


def run_logits(model_path: Path, images_nchw: np.ndarray) -> np.ndarray:
    with Session(model_path, threads=2) as session:
        return session.logits(images_nchw)
