"""The peer int8 tools, each behind the same two calls, for benchmarks/peers_accuracy.py,
benchmarks/accuracy.py and benchmarks/peers.py.

    path = convert_int8(peer, checkpoint, calibration_nchw, out_dir)   # the peer's int8 model file
    logits = run_logits(peer, path, images_nchw)                       # (N, classes) float32
    facts = read_facts(path)   # conversion wall time (s), file size, tool version, log

Each peer uses its own documented static int8 flow and calibrates on exactly the images given
(NCHW float32, already preprocessed):
  litert-torch     PT2E (PT2EQuantizer, per-channel symmetric, static) -> .tflite, run in LiteRT
  onnx2tf          plain ONNX -> onnx2tf -oiqt with -cind (the checkpoint's mean/std) -> full-integer .tflite
  executorch       PT2E XNNPACKQuantizer (per-channel) + XnnpackPartitioner -> .pte, executorch.runtime, batch 1
  onnxruntime-qdq  plain ONNX -> quant_pre_process + quantize_static (QDQ, per-channel, QInt8, MinMax), ORT CPU
The first three run in their own venvs (`bash benchmarks/setup_peers.sh`) through small driver
scripts in drivers/; onnxruntime runs here. Anything a peer cannot do raises PeerError, whose
message is the reason to put in a "failed: ..." row.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from peers_lib.common import PeerError, read_facts

PEERS = {  # name -> (module, what the tables call it)
    "litert-torch": ("peers_lib.litert_torch", "litert-torch PT2E int8"),
    "onnx2tf": ("peers_lib.onnx2tf", "onnx2tf full-int8"),
    "executorch": ("peers_lib.executorch", "ExecuTorch XNNPACK PT2E int8"),
    "onnxruntime-qdq": ("peers_lib.onnxruntime_qdq", "onnxruntime quantize_static QDQ int8"),
}

__all__ = ["PEERS", "PeerError", "convert_int8", "label", "read_facts", "run_logits"]


def label(peer: str) -> str:
    return PEERS[peer][1]


def _module(peer: str):
    if peer not in PEERS:
        raise PeerError(f"unknown peer {peer!r}: choose from {', '.join(PEERS)}")
    return importlib.import_module(PEERS[peer][0])


def convert_int8(peer: str, checkpoint, calibration_nchw: np.ndarray, out_dir, input_size: int | None = None,
                 with_float: bool = False) -> Path:
    """The peer's int8 model of `checkpoint` (a load_model source: a mixdeploy checkpoint names its
    model and preprocessing), calibrated on `calibration_nchw`, written under `out_dir`.
    input_size: export at another resolution (MixNets are fully convolutional). with_float: also
    keep the peer's float model where its flow makes one (read_facts(path)["fp32_model"])."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _module(peer).convert_int8(str(checkpoint), calibration_nchw, out_dir, input_size, with_float)
    except PeerError:
        raise
    except Exception as err:  # a peer's own failure (any type) is a result, told in one line
        raise PeerError(_reason(err)) from err


def run_logits(peer: str, model_path, images_nchw: np.ndarray) -> np.ndarray:
    """(N, classes) float32 logits of the peer's model on preprocessed NCHW float32 images."""
    try:
        logits = _module(peer).run_logits(Path(model_path), images_nchw)
    except PeerError:
        raise
    except Exception as err:
        raise PeerError(_reason(err)) from err
    return np.asarray(logits, np.float32).reshape(len(images_nchw), -1)


def _reason(err: Exception) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__
