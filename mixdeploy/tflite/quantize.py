"""Precision settings: fp16, dynamic range, full-integer int8 (MLIR quantizer) and 16x8.

Calibration images arrive NCHW (the project's tensor contract). int8 ranges are measured by
calibrate.py and handed to TF's MLIR quantizer (`quantize_calibrated`); int16x8 still goes through
TFLiteConverter's own calibrator (`apply_precision` + `representative_dataset`, NHWC, one image
per step, a progress callback per image) because the MLIR quantizer has no 16x8 mode.
`apply_precision`/`representative_dataset` are also used by mixdeploy.blame (QuantizationDebugger).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.graph import GraphInput

if TYPE_CHECKING:
    from mixdeploy.tflite.recipe import QuantRecipe

PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int16x8")
FULL_INTEGER = ("int8", "int16x8")
# Measured on Fashion-MNIST MixNet-S (docs/converter.md): agreement is flat from 32 to 256 images
# with the default ranges, while calibration costs a fixed time per image.
DEFAULT_CALIBRATION_IMAGES = 64


@dataclass
class QuantizationSettings:
    precision: str
    io_dtype: str | None = None
    calibration_images: int = 0
    keep_float: list[str] = field(default_factory=list)
    recipe: "QuantRecipe | None" = None     # int8 only (mixdeploy.tflite.recipe)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "io_dtype": self.io_dtype,
                "calibration_images": self.calibration_images, "keep_float": list(self.keep_float),
                "recipe": self.recipe.to_dict() if self.recipe else None}


def check_precision_args(precision: str, calibration, io_dtype: str, spec: GraphInput) -> np.ndarray | None:
    if precision not in PRECISIONS:
        raise MixdeployError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if io_dtype not in ("int8", "float32"):
        raise MixdeployError(f"io_dtype must be 'int8' or 'float32', got '{io_dtype}'")
    if precision not in FULL_INTEGER:
        return None
    if calibration is None:
        raise MixdeployError(
            f"precision '{precision}' needs calibration images (NCHW float32, preprocessed like "
            "the model's input); pass e.g. --calibration fashion-mnist or a folder of images")
    calibration = np.asarray(calibration)
    expected = tuple(spec.nchw_shape[1:])
    if calibration.ndim != len(spec.nchw_shape) or tuple(calibration.shape[1:]) != expected:
        raise MixdeployError(
            f"calibration data has shape {tuple(calibration.shape)} but the model input "
            f"'{spec.name}' needs (N, {', '.join(map(str, expected))}) NCHW; preprocess the images "
            f"to the model's input size ({'x'.join(map(str, expected[-2:]))})")
    if len(calibration) == 0:
        raise MixdeployError("calibration data is empty; give at least one image")
    if not np.all(np.isfinite(calibration)):
        raise MixdeployError("calibration data contains NaN or infinite values; check the preprocessing")
    return calibration.astype(np.float32, copy=False)


def representative_dataset(calibration_nchw: np.ndarray, nhwc: bool,
                           progress: Callable[[int, int], None] | None):
    total = len(calibration_nchw)

    def generate():
        for i, image in enumerate(calibration_nchw):
            sample = np.transpose(image, (1, 2, 0)) if nhwc and image.ndim == 3 else image
            yield [np.ascontiguousarray(sample[None], dtype=np.float32)]
            if progress is not None:
                progress(i + 1, total)

    return generate


def quantize_calibrated(calibrated: bytes, io_dtype: str, denylisted_nodes: list[str] | None = None) -> bytes:
    """Full-integer int8 quantization of a calibrated model (what TFLiteConverter.convert() does next)."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    io_type = tf.int8 if io_dtype == "int8" else tf.float32
    return tf_convert.mlir_quantize(calibrated, disable_per_channel=False, input_data_type=io_type,
                                    output_data_type=io_type, denylisted_nodes=denylisted_nodes or None)


def denylist_for(calibrated: bytes, scopes: list[str]) -> list[str]:
    """Output tensor names of the TFLite ops that come from the given TF name scopes (= ONNX nodes).

    Fused ops carry every fused op's name joined by ';', so a scope matches any of the parts;
    an op is matched through its outputs or its own weights.
    """
    from mixdeploy.tflite.inspect import op_tensor_names

    def from_scope(name: str) -> bool:
        return any(part == scope or part.startswith(scope + "/") for part in name.split(";") for scope in scopes)

    names = []
    for outputs, all_names in op_tensor_names(calibrated):
        if any(from_scope(name) for name in all_names):
            names.extend(outputs)
    return names


def apply_precision(converter, precision: str, calibration_nchw, io_dtype: str, nhwc_input: bool,
                    progress=None) -> None:
    """Configure `converter` (a tf.lite.TFLiteConverter) for `precision`."""
    import tensorflow as tf

    if precision == "fp32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if precision == "dynamic":
        return   # weights int8, activations float: no dataset needed
    converter.representative_dataset = representative_dataset(calibration_nchw, nhwc_input, progress)
    if precision == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = tf.int8 if io_dtype == "int8" else tf.float32
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        io_type = tf.int16 if io_dtype == "int8" else tf.float32
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
