"""Activation ranges for full-integer quantization, measured by running the float TFLite model.

Why not TFLiteConverter's own calibrator: it runs an unoptimized, instrumented interpreter one
image at a time (~0.45 s per 224x224 MixNet-S image here). Running the float .tflite through
XNNPACK with every activation tensor made a graph output measures the same per-tensor min/max
~15x faster, and lets us choose the range estimator. The ranges are written into the float
model's tensors (QuantizationParameters.min/max, exactly where the calibrator puts them) and
handed to the same MLIR quantizer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

TRIM_FRACTION = 1 / 8   # trimmed-midminmax: the extremes of the top eighth of images are left out
RANGE_METHODS = ("minmax", "percentile", "mse", "avgminmax", "midminmax", "trimmed-midminmax")
CALIBRATION_BATCH = 8
SAMPLES_PER_IMAGE = 4096      # values kept per tensor and image for the percentile / mse estimators
# Per-channel vectors (1x1 spatial: the squeeze-excite vectors, the pooled features, the logits)
# get their own range rule: their per-image extremes swing widely (a few hundred values),
# clipping them moves whole channels, and their resolution costs nothing. Told by shape, not by
# value count: at 32 px a whole late stage has fewer values than one SE vector at 224 does.


def is_channel_vector(values: np.ndarray) -> bool:
    """One image's tensor (H,W,C / C / ...) with no spatial extent."""
    return values.ndim < 3 or int(np.prod(values.shape[:-1])) == 1


class RangeObserver:
    """Per-tensor statistics over calibration images, and ranges from them.

    minmax: global min/max over all images (what TFLite's calibrator records).
    avgminmax: mean over images of each image's min/max.
    midminmax: halfway between avgminmax and minmax (at 224 px avgminmax clips a few percent of
        the values of a typical image and minmax spends resolution on one outlier).
    trimmed-midminmax: midminmax with the global extremes trimmed (the default): halfway between
        avgminmax and the TRIM_FRACTION-th largest per-image max (smallest min), so a few outlier
        calibration images no longer pull the range (measured in docs/accuracy.md).
    percentile: the 0.01% / 99.99% percentiles of the values pooled over all images.
    mse: the clipping range that minimizes the int8 quantization MSE of the pooled values.
    `small_method` applies to per-channel vectors (is_channel_vector).
    """

    def __init__(self, method: str = "avgminmax", percentile: float = 99.99, seed: int = 0,
                 small_method: str | None = None):
        self.method = method
        self.small_method = small_method or method
        self.percentile = percentile
        self.rng = np.random.default_rng(seed)
        self.low: dict[int, list[float]] = {}
        self.high: dict[int, list[float]] = {}
        self.vector: dict[int, bool] = {}
        self.samples: dict[int, list[np.ndarray]] = {}

    def _rule(self, index: int) -> str:
        return self.small_method if self.vector[index] else self.method

    def observe(self, index: int, values: np.ndarray) -> None:
        """values: one image's tensor, batch dimension removed."""
        flat = values.reshape(-1)
        self.vector[index] = is_channel_vector(values)
        self.low.setdefault(index, []).append(float(flat.min()))
        self.high.setdefault(index, []).append(float(flat.max()))
        if self._rule(index) in ("percentile", "mse"):
            if flat.size > SAMPLES_PER_IMAGE:
                flat = self.rng.choice(flat, SAMPLES_PER_IMAGE, replace=False)
            self.samples.setdefault(index, []).append(flat.astype(np.float32, copy=True))

    def ranges(self, full_range: set[int] = frozenset()) -> dict[int, tuple[float, float]]:
        """full_range: tensors that keep the global min/max whatever the method (the model outputs)."""
        result = {}
        for index in self.low:
            method = "minmax" if index in full_range else self._rule(index)
            low, high = self._range(index, method)
            result[index] = (min(float(low), 0.0), max(float(high), 0.0))   # int8 ranges must contain zero
        return result

    def _range(self, index: int, method: str) -> tuple[float, float]:
        low, high = min(self.low[index]), max(self.high[index])
        if method == "avgminmax":
            return float(np.mean(self.low[index])), float(np.mean(self.high[index]))
        if method == "midminmax":
            return self._halfway_to_extreme(index, rank=1)
        if method == "trimmed-midminmax":
            return self._halfway_to_extreme(index, rank=max(1, int(np.ceil(len(self.high[index]) * TRIM_FRACTION))))
        if method == "percentile":
            pooled = np.concatenate(self.samples[index])
            return tuple(np.percentile(pooled, [100 - self.percentile, self.percentile]))
        if method == "mse":
            return mse_range(np.concatenate(self.samples[index]), low, high)
        return low, high

    def _halfway_to_extreme(self, index: int, rank: int) -> tuple[float, float]:
        """Halfway between the mean per-image min/max and the rank-th most extreme one (rank 1:
        the global min/max, i.e. midminmax; 8 of 64 images: trimmed-midminmax)."""
        low, high = sorted(self.low[index])[rank - 1], sorted(self.high[index])[-rank]
        # the means over images in observation order, as avgminmax takes them
        return (float(np.mean(self.low[index])) + low) / 2, (float(np.mean(self.high[index])) + high) / 2


def mse_range(values: np.ndarray, low: float, high: float, steps: int = 40) -> tuple[float, float]:
    """Shrink [low, high] by a common factor to minimize the 8-bit fake-quantization MSE of `values`."""
    low, high = min(low, 0.0), max(high, 0.0)
    best, best_error = (low, high), np.inf
    for factor in np.linspace(1.0, 0.2, steps):
        lo, hi = low * factor, high * factor
        scale = (hi - lo) / 255.0
        if scale <= 0:
            break
        zero = np.round(-lo / scale)
        q = np.clip(np.round(values / scale) + zero, 0, 255)
        error = float(np.mean(((q - zero) * scale - values) ** 2))
        if error < best_error:
            best, best_error = (lo, hi), error
    return best


# A tensor that is constant over the calibration set (e.g. a conv that only ever reads padding at a
# low resolution) gets a zero-width range, hence a ~1e-8 scale; XNNPACK then aborts the process
# when it prepares the op (requantization scale out of range). Such tensors borrow the range of
# the op's input instead: any scale represents a constant zero exactly.
DEGENERATE_WIDTH = 1e-6


def activation_tensors(float_model: bytes) -> tuple[list[int], dict[int, int]]:
    """Float tensors computed at run time (graph inputs and op outputs, not weights), and for each
    op output the op's first activation input."""
    from mixdeploy.tflite.inspect import tflite_schema

    schema = tflite_schema()
    graph = schema.Model.GetRootAsModel(float_model, 0).Subgraphs(0)
    indices = set(graph.InputsAsNumpy().tolist())
    producer_input: dict[int, int] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        outputs = op.OutputsAsNumpy().tolist()
        indices.update(outputs)
        first_input = next((int(t) for t in op.InputsAsNumpy().tolist() if t >= 0), None)
        for out in outputs:
            if first_input is not None:
                producer_input[out] = first_input
    floats = sorted(i for i in indices if graph.Tensors(i).Type() == schema.TensorType.FLOAT32)
    return floats, producer_input


def widen_degenerate(ranges: dict[int, tuple[float, float]], producer_input: dict[int, int]):
    for index in sorted(ranges):   # tensors are numbered roughly in graph order; inputs come first
        low, high = ranges[index]
        source = producer_input.get(index)
        while high - low < DEGENERATE_WIDTH and source in ranges:
            low, high = ranges[source]
            source = producer_input.get(source)
        if high - low < DEGENERATE_WIDTH:
            low, high = -1.0, 1.0
        ranges[index] = (low, high)
    return ranges


@dataclass
class Calibration:
    """What one run of the float model over the calibration images measured."""

    ranges: dict[int, tuple[float, float]]            # activation tensor index -> (min, max)
    tap_means: dict[str, np.ndarray] | None = None    # conv_key -> input tap means (bias correction)
    moments: dict[str, np.ndarray] | None = None      # conv_key -> E[x x^T] of its input windows (weight rounding)
    conv_groups: dict[str, int] | None = None         # conv_key -> groups of a CONV_2D (weight rounding)
    images: int = 0


def calibrate_float_model(float_model: bytes, images_nhwc: np.ndarray, method: str = "avgminmax",
                          small_method: str | None = None, conv_input_means: bool = False,
                          conv_input_moments: bool = False,
                          progress: Callable[[int, int], None] | None = None,
                          batch_size: int = CALIBRATION_BATCH) -> Calibration:
    """Run the float model (XNNPACK, every activation tensor an output) over the images once and
    return the activation ranges and, for bias correction and weight rounding, the mean and second
    moment of every conv's input."""
    from tensorflow.lite.tools import flatbuffer_utils

    from mixdeploy.tflite.bias_correction import InputMeanObserver, conv_geometries
    from mixdeploy.tflite.weight_rounding import SecondMomentObserver, conv_groups

    tensors, producer_input = activation_tensors(float_model)
    model_object = flatbuffer_utils.convert_bytearray_to_object(float_model)
    geometries = conv_geometries(model_object)
    means = InputMeanObserver(geometries) if conv_input_means else None
    groups = conv_groups(model_object) if conv_input_moments else None
    moments = SecondMomentObserver(geometries, groups) if conv_input_moments else None
    outputs = set(model_object.subgraphs[0].outputs.tolist())
    observed_model = every_tensor_an_output(model_object, tensors)
    interpreter, input_index, batch = _calibration_interpreter(observed_model, images_nhwc, batch_size)
    observer = RangeObserver(method, small_method=small_method)
    done = 0
    for start in range(0, len(images_nhwc), batch):
        chunk = np.ascontiguousarray(images_nhwc[start:start + batch], np.float32)
        if len(chunk) < batch:   # the last, partial batch: pad with its first image, observe only the real ones
            chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch - len(chunk), axis=0)])
        interpreter.set_tensor(input_index, chunk)
        interpreter.invoke()
        real = min(batch, len(images_nhwc) - start)
        for index in tensors:
            values = interpreter.get_tensor(index)
            for image in range(real):
                observer.observe(index, values[image])
        if means is not None:
            means.observe(lambda index: interpreter.get_tensor(index)[:real], weight=real)
        if moments is not None:
            moments.observe(lambda index: interpreter.get_tensor(index)[:real])
        done += real
        if progress is not None:
            progress(done, len(images_nhwc))
    # Clipping the logits would cut the largest ones (cosine drops) and buy no resolution that
    # matters for top-1, so the outputs keep their full range.
    ranges = widen_degenerate(observer.ranges(full_range=outputs), producer_input)
    return Calibration(ranges, means.tap_means() if means is not None else None,
                       moments.moments() if moments is not None else None, groups, len(images_nhwc))


def every_tensor_an_output(model_object, tensors: list[int]) -> bytes:
    """The model (flatbuffer object, changed in place) with every activation tensor among the
    graph's outputs, after its own: XNNPACK then keeps each one. Preserving all tensors instead
    (`experimental_preserve_all_tensors`) turns the delegate off: on MixNet-S at 224 the builtin
    kernels took 2.5 s per batch of 8 images against 0.5 s, the values within 5e-6 (relative)."""
    from tensorflow.lite.tools import flatbuffer_utils

    graph = model_object.subgraphs[0]
    own = graph.outputs.tolist()
    inputs = set(graph.inputs.tolist())
    graph.outputs = np.array(own + [t for t in tensors if t not in inputs and t not in own], dtype=np.int32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model_object))


def _calibration_interpreter(float_model: bytes, images_nhwc: np.ndarray, batch_size: int):
    """An interpreter on XNNPACK, batched when the graph allows it (several images per invoke:
    ~2x faster calibration); a graph with a hard-coded batch runs image by image."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=float_model, num_threads=os.cpu_count() or 1)
    details = interpreter.get_input_details()[0]
    batch = max(1, min(batch_size, len(images_nhwc)))
    if batch > 1:
        try:
            interpreter.resize_tensor_input(details["index"], [batch, *details["shape"][1:]], strict=False)
            interpreter.allocate_tensors()
            if int(interpreter.get_output_details()[0]["shape"][0]) != batch:
                raise ValueError("hard-coded batch")
        except Exception:  # noqa: BLE001 — fall back to one image per invoke
            batch = 1
    if batch == 1:
        interpreter.resize_tensor_input(details["index"], [1, *details["shape"][1:]])
    interpreter.allocate_tensors()
    return interpreter, details["index"], batch


def measure_ranges(float_model: bytes, images_nhwc: np.ndarray, method: str = "avgminmax",
                   progress: Callable[[int, int], None] | None = None,
                   small_method: str | None = None) -> dict[int, tuple[float, float]]:
    return calibrate_float_model(float_model, images_nhwc, method, small_method, progress=progress).ranges


def annotate_ranges(float_model: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The float model with min/max recorded on each activation tensor (a 'calibrated' model)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(float_model)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        params = tensors[index].quantization or schema.QuantizationParametersT()
        params.min, params.max = [float(low)], [float(high)]
        tensors[index].quantization = params
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
