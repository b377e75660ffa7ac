"""onnxruntime's static int8: quantize_static on the exported ONNX (QDQ, per-channel), run in ORT CPU.

As onnxruntime's quantization guide does it: `quant_pre_process` (shape inference and graph
optimization) first, then quantize_static with QuantFormat.QDQ, per_channel=True, QInt8
activations and weights, MinMax calibration on the given images. It runs in this environment
(onnxruntime is one of mixdeploy's dependencies), so no venv.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from mixdeploy.onnx.export import INPUT_NAME
from peers_lib.common import Stopwatch, export_plain_onnx, package_version, write_facts

CALIBRATION_BATCH = 16


class _Batches(CalibrationDataReader):
    """The calibration images in batches, as feed dicts; None at the end."""

    def __init__(self, images_nchw: np.ndarray):
        self._feeds = ({INPUT_NAME: np.ascontiguousarray(images_nchw[i:i + CALIBRATION_BATCH], np.float32)}
                       for i in range(0, len(images_nchw), CALIBRATION_BATCH))

    def get_next(self):
        return next(self._feeds, None)


def convert_int8(checkpoint: str, calibration_nchw: np.ndarray, out_dir: Path, input_size: int | None,
                 with_float: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, prepared, int8 = out_dir / "model.onnx", out_dir / "model_prep.onnx", out_dir / "model_qdq.onnx"
    with Stopwatch() as watch:
        export_plain_onnx(checkpoint, input_size, onnx_path, dynamic_batch=True)
        quant_pre_process(str(onnx_path), str(prepared))
        quantize_static(str(prepared), str(int8), _Batches(calibration_nchw), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    write_facts(int8, "onnxruntime-qdq", package_version(None, "onnxruntime"), watch.seconds, len(calibration_nchw),
                onnx_path if with_float else None)
    return int8


def run_logits(model_path: Path, images_nchw: np.ndarray) -> np.ndarray:
    from mixdeploy.runtimes import OnnxRunner

    return OnnxRunner(model_path, name="onnxruntime-qdq").run(images_nchw)
