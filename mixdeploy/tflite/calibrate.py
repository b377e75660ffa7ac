"""Activation ranges for full-integer quantization, measured by running the float TFLite model.

Why not TFLiteConverter's own calibrator: it runs an unoptimized, instrumented interpreter one
image at a time (~0.45 s per 224x224 MixNet-S image here). Running the float .tflite with the
builtin kernels and every intermediate tensor preserved measures the same per-tensor min/max
~3-4x faster, and lets us choose the range estimator. The ranges are written into the float
model's tensors (QuantizationParameters.min/max, exactly where the calibrator puts them) and
handed to the same MLIR quantizer.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

RANGE_METHODS = ("minmax", "percentile", "mse", "avgminmax")
SAMPLES_PER_IMAGE = 4096      # values kept per tensor and image for the percentile / mse estimators


class RangeObserver:
    """Per-tensor range over calibration images.

    minmax: global min/max over all images (what TFLite's calibrator records).
    avgminmax: mean over images of each image's min/max.
    percentile: the 0.01% / 99.99% percentiles of the values pooled over all images.
    mse: the clipping range that minimizes the int8 quantization MSE of the pooled values.
    """

    def __init__(self, method: str = "avgminmax", percentile: float = 99.99, seed: int = 0):
        self.method = method
        self.percentile = percentile
        self.rng = np.random.default_rng(seed)
        self.low: dict[int, list[float]] = {}
        self.high: dict[int, list[float]] = {}
        self.samples: dict[int, list[np.ndarray]] = {}

    def observe(self, index: int, values: np.ndarray) -> None:
        flat = values.reshape(-1)
        self.low.setdefault(index, []).append(float(flat.min()))
        self.high.setdefault(index, []).append(float(flat.max()))
        if self.method in ("percentile", "mse"):
            if flat.size > SAMPLES_PER_IMAGE:
                flat = self.rng.choice(flat, SAMPLES_PER_IMAGE, replace=False)
            self.samples.setdefault(index, []).append(flat.astype(np.float32, copy=True))

    def ranges(self, full_range: set[int] = frozenset()) -> dict[int, tuple[float, float]]:
        """full_range: tensors that keep the global min/max whatever the method (the model outputs)."""
        result = {}
        for index in self.low:
            low, high = min(self.low[index]), max(self.high[index])
            if index in full_range:
                pass
            elif self.method == "avgminmax":
                low, high = float(np.mean(self.low[index])), float(np.mean(self.high[index]))
            elif self.method == "percentile":
                pooled = np.concatenate(self.samples[index])
                low, high = np.percentile(pooled, [100 - self.percentile, self.percentile])
            elif self.method == "mse":
                low, high = mse_range(np.concatenate(self.samples[index]), low, high)
            result[index] = (min(float(low), 0.0), max(float(high), 0.0))   # int8 ranges must contain zero
        return result


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
    from mixdeploy.tflite.inspect import _schema

    schema = _schema()
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


def measure_ranges(float_model: bytes, images_nhwc: np.ndarray, method: str = "avgminmax",
                   progress: Callable[[int, int], None] | None = None) -> dict[int, tuple[float, float]]:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=float_model, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    tensors, producer_input = activation_tensors(float_model)
    observer = RangeObserver(method)
    for done, image in enumerate(images_nhwc, start=1):
        interpreter.set_tensor(input_index, np.ascontiguousarray(image[None], np.float32))
        interpreter.invoke()
        for index in tensors:
            observer.observe(index, interpreter.get_tensor(index))
        if progress is not None:
            progress(done, len(images_nhwc))
    # Clipping the logits would cut the largest ones (cosine drops) and buy no resolution that
    # matters for top-1, so the outputs keep their full range.
    outputs = {d["index"] for d in interpreter.get_output_details()}
    return widen_degenerate(observer.ranges(full_range=outputs), producer_input)


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
