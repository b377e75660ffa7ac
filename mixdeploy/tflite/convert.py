"""Public entry of the converter: ONNX ModelProto -> .tflite file (fp32/fp16/dynamic/int8/16x8).

The ONNX graph is traced into TF ops laid out NHWC (graph.py, ops.py), handed to
`tf.lite.TFLiteConverter.from_concrete_functions`, and the flatbuffer is written atomically.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from mixdeploy.atomic import write_bytes_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx import load_onnx  # noqa: F401  (also the converter's entry for ONNX files)
from mixdeploy.tflite.quantize import (FULL_INTEGER, QuantizationSettings, apply_precision,
                                       check_precision_args)
from mixdeploy.tflite.recipe import QuantRecipe, get_recipe


@dataclass
class ConvertResult:
    path: Path
    precision: str
    op_histogram: dict[str, int]          # TFLite builtin op name -> count
    inputs: list[dict]                    # name, shape, dtype, quantization (scale, zero_point)
    outputs: list[dict]
    seconds: float
    file_size: int
    sha256: str
    quantization: dict
    input_layout: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["path"] = str(self.path)
        return d


def convert_onnx(model: onnx.ModelProto, out_path, precision: str = "fp32",
                 calibration: np.ndarray | None = None, io_dtype: str = "int8",
                 input_layout: str = "nhwc", progress: Callable[[int, int], None] | None = None,
                 keep_float: list[str] | None = None, recipe: str | QuantRecipe | None = None) -> ConvertResult:
    """Convert `model` to TFLite at `out_path`.

    calibration: NCHW float32 images, preprocessed exactly like the model's input (needed for
    int8/int16x8). io_dtype: the input/output type of full-integer models ("int8" -> int8 I/O,
    int16 for int16x8; "float32" keeps float I/O with quantize/dequantize at the ends).
    input_layout: "nhwc" (no transpose in the model) or "nchw" (one TRANSPOSE at the input).
    keep_float: ONNX node names whose ops stay float in a quantized model (selective quantization).
    recipe: how int8 is calibrated and quantized (a name from mixdeploy.tflite.recipe.RECIPES or a
    QuantRecipe; default: "default", measured in docs/accuracy.md).
    """
    started = time.perf_counter()
    model = as_model_proto(model)
    recipe = get_recipe(recipe)
    check_options(input_layout, recipe)
    keep_float = list(keep_float or [])
    notes: list[str] = []
    if precision == "int8":
        model = graph_for_recipe(model, recipe, notes)
    traced = _traced(model, input_layout)
    calibration = check_precision_args(precision, calibration, io_dtype, traced.inputs[0])
    check_keep_float(keep_float, precision, traced.node_scopes)

    flatbuffer, converter_notes = run_converter(traced, precision, calibration, io_dtype, input_layout, progress,
                                                keep_float, recipe)
    notes += converter_notes
    write_bytes_atomic(out_path, flatbuffer)

    from mixdeploy.tflite.inspect import inspect_tflite

    inspection = inspect_tflite(out_path)
    settings = QuantizationSettings(precision, io_dtype if precision in FULL_INTEGER else None,
                                    0 if calibration is None else len(calibration), keep_float,
                                    recipe if precision == "int8" else None)
    if any(spec.dynamic_batch for spec in traced.inputs):
        notes.append("the ONNX batch dimension is dynamic; the TFLite model takes batch 1")
    if input_layout == "nhwc":
        notes.append("input is NHWC (the ONNX model's NCHW input transposed); feed images as N,H,W,C")
    return ConvertResult(
        path=Path(out_path), precision=precision, op_histogram=inspection.op_histogram,
        inputs=inspection.inputs, outputs=inspection.outputs,
        seconds=time.perf_counter() - started, file_size=len(flatbuffer),
        sha256=hashlib.sha256(flatbuffer).hexdigest(), quantization=settings.to_dict(),
        input_layout=input_layout, notes=notes)


def as_model_proto(model) -> onnx.ModelProto:
    if isinstance(model, (str, os.PathLike)):
        model = load_onnx(model)
    if not isinstance(model, onnx.ModelProto):
        raise MixdeployError("convert_onnx needs an onnx.ModelProto or the path of an .onnx file")
    if not model.graph.node:
        raise MixdeployError("the ONNX model has no nodes (empty or corrupt file); export it again")
    return model


def graph_for_recipe(model: onnx.ModelProto, recipe: QuantRecipe, notes: list[str]) -> onnx.ModelProto:
    """The ONNX graph the recipe quantizes: with `concat_free`, channel concats (MixConv branches)
    pushed into the convs that read them, so each branch keeps its own int8 scale."""
    if not recipe.concat_free:
        return model
    from mixdeploy.onnx.rewrite import rewrite

    result = rewrite(model, passes=["concat_free"], verify=True)
    details = result.report.passes[0].details
    notes.append(f"concat-free: {len(details['matched'])} channel concat(s) pushed into the convs that read "
                 f"them, {len(details['skipped'])} kept"
                 + (f" ({details['skipped'][0]['concat']}: {details['skipped'][0]['reason']})"
                    if details["skipped"] else ""))
    return result.model


def check_options(input_layout: str, recipe: QuantRecipe) -> None:
    from mixdeploy.tflite.calibrate import RANGE_METHODS

    if input_layout not in ("nhwc", "nchw"):
        raise MixdeployError(f"input_layout must be 'nhwc' or 'nchw', got '{input_layout}'")
    for method in (recipe.range_method, recipe.small_range_method):
        if method not in RANGE_METHODS:
            raise MixdeployError(f"recipe {recipe.name!r}: range method must be one of {', '.join(RANGE_METHODS)}, "
                                 f"got '{method}'")


def check_keep_float(keep_float: list[str], precision: str, node_scopes: dict[str, str]) -> None:
    if not keep_float:
        return
    if precision != "int8":
        raise MixdeployError("keep_float (selective quantization) applies to int8 only")
    unknown = [n for n in keep_float if n not in node_scopes]
    if unknown:
        raise MixdeployError(f"keep_float names nodes not in the ONNX graph: {', '.join(unknown[:5])}; "
                             "use node names of the converted ONNX graph (e.g. 'blocks.2.0.conv_dw.1')")


# `mixdeploy export` converts one ONNX graph to fp32 and then to int8, and int8 starts from the very
# float flatbuffer fp32 writes: tracing and TF's float conversion are ~20% of a 224-px MixNet-S
# export, so the last graph's trace and float flatbuffer are kept for the next call (one entry,
# keyed by the graph's bytes and the input layout).
_last_traced: dict = {}


def _traced(model: onnx.ModelProto, input_layout: str):
    from mixdeploy.tflite.graph import trace_onnx

    key = (hashlib.sha256(model.SerializeToString()).hexdigest(), input_layout)
    if _last_traced.get("key") != key:
        _last_traced.clear()
        _last_traced.update(key=key, traced=trace_onnx(model, input_layout))
    return _last_traced["traced"]


def _float_flatbuffer(new_converter) -> bytes:
    """TF's float conversion of the kept trace (convert_onnx's, from _traced), made once."""
    if "float" not in _last_traced:
        _last_traced["float"] = new_converter().convert()
    return _last_traced["float"]


def run_converter(traced, precision, calibration, io_dtype, input_layout, progress, keep_float, recipe):
    import tensorflow as tf

    def new_converter():
        return tf.lite.TFLiteConverter.from_concrete_functions([traced.concrete_function], traced.module)

    notes: list[str] = []
    try:
        if precision in ("fp32", "int8"):
            float_model = _float_flatbuffer(new_converter)
            if precision == "fp32":
                return float_model, notes
            return convert_int8(float_model, traced, calibration, io_dtype, input_layout,
                                progress, keep_float, recipe, notes), notes
        converter = new_converter()
        apply_precision(converter, precision, calibration, io_dtype, input_layout == "nhwc", progress)
        return converter.convert(), notes
    except MixdeployError:
        raise
    except Exception as err:  # the converter's own errors are long MLIR dumps: keep the gist
        first_lines = "\n".join(str(err).strip().splitlines()[:6])
        raise MixdeployError(f"TFLiteConverter failed ({precision}): {first_lines}\n"
                             "Try another precision, or report the model and this message.") from err


def convert_int8(float_model: bytes, traced, calibration, io_dtype, input_layout, progress, keep_float,
                 recipe: QuantRecipe, notes) -> bytes:
    """Full-integer int8: measure activation ranges on the float model, quantize with TF's MLIR
    quantizer, then (recipe.bias_correction) fold the weight-rounding bias into the conv biases."""
    from mixdeploy.tflite import bias_correction, calibrate, quantize, weight_rounding

    images = np.transpose(calibration, (0, 2, 3, 1)) if input_layout == "nhwc" else calibration
    measured = calibrate.calibrate_float_model(float_model, images, recipe.range_method, recipe.small_range_method,
                                               conv_input_means=recipe.bias_correction,
                                               conv_input_moments=recipe.weight_rounding, progress=progress)
    calibrated = calibrate.annotate_ranges(float_model, measured.ranges)
    denylist = None
    if keep_float:
        scopes = [traced.node_scopes[name] for name in keep_float]
        denylist = quantize.denylist_for(calibrated, scopes)
        if not denylist:
            raise MixdeployError(f"keep_float: no TFLite op comes from node(s) {', '.join(keep_float)} "
                                 "(folded away by the converter?); pick a Conv/Mul/... node")
        notes.append(f"kept {len(keep_float)} ONNX node(s) in float ({len(denylist)} TFLite ops): "
                     f"{', '.join(keep_float[:5])}")
    quantized = quantize.quantize_calibrated(calibrated, io_dtype, denylist)
    if recipe.weight_rounding:   # before bias correction, which then sees the final int8 weights
        quantized, summary = weight_rounding.round_weights(quantized, float_model, measured.moments,
                                                           measured.conv_groups)
        notes.append(f"weight rounding: {summary['changed_weights']} int8 weights of {summary['rounded_ops']} "
                     "convs moved off round-to-nearest")
    if recipe.bias_correction:
        quantized, summary = bias_correction.correct_biases(quantized, float_model, measured.tap_means)
        notes.append(f"bias correction: {summary['corrected_ops']} conv biases corrected "
                     f"(RMS shift {summary['rms_shift_in_bias_steps']} bias steps)")
    return quantized
