"""Blame: which layers make int8 lose accuracy, and what keeping them in float costs.

`blame_int8` runs TensorFlow's QuantizationDebugger on the same traced graph the converter
quantizes (mixdeploy.tflite.graph.trace_onnx + the converter's int8 settings). The debugger
feeds each quantized op the *same* (dequantized) inputs as its float twin, so an op's error is
its own, not inherited. Ranking by RMSE / scale makes layers with different ranges comparable:
pure rounding gives 1/sqrt(12) = 0.289; clearly more means clipping, a too-coarse weight scale
or an approximated kernel (sigmoid LUT, mean) at that layer.

TFLite tensor names keep the TF name scopes the tracer derived from ONNX node names, so each
ranked layer maps back to ONNX node(s) — the names `convert_onnx(..., keep_float=[...])` takes.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from mixdeploy.errors import MixdeployError
from mixdeploy.tflite.recipe import get_recipe

IDEAL_RMSE_OVER_SCALE = 1.0 / math.sqrt(12.0)   # uniform rounding error of one quantization step
# Ops that only move data: their int8 output equals their input's, error ~0 by construction.
DATA_MOVEMENT_OPS = {"SPLIT", "SPLIT_V", "CONCATENATION", "RESHAPE", "PAD", "SLICE", "STRIDED_SLICE", "TRANSPOSE"}


@dataclass
class LayerError:
    rank: int
    op: str                         # TFLite op type
    tensor: str                     # TFLite output tensor name
    onnx_nodes: list[str]           # ONNX node(s) the op came from (fused ops list several)
    rmse_over_scale: float
    rmse: float
    scale: float
    max_abs_error: float
    mean_error: float


@dataclass
class BlameReport:
    layers: list[LayerError]                        # all quantized ops, worst first
    calibration_images: int
    debug_images: int
    seconds: float
    ideal_rmse_over_scale: float = IDEAL_RMSE_OVER_SCALE
    notes: list[str] = field(default_factory=list)

    def worst(self, k: int = 10) -> list[LayerError]:
        return self.layers[:k]

    def to_dict(self, top: int = 20) -> dict:
        return {"calibration_images": self.calibration_images, "debug_images": self.debug_images,
                "seconds": round(self.seconds, 2), "ideal_rmse_over_scale": self.ideal_rmse_over_scale,
                "layers": [asdict(layer) for layer in self.layers[:top]], "notes": self.notes,
                "markdown": self.to_markdown(top=10)}

    def to_markdown(self, top: int = 10) -> str:
        lines = [f"Per-layer int8 error (TensorFlow QuantizationDebugger, {self.debug_images} images; "
                 f"pure rounding = {self.ideal_rmse_over_scale:.3f} RMSE/scale):", "",
                 "| rank | op | ONNX node(s) | RMSE/scale | RMSE | scale | max abs err |", "|---|---|---|---|---|---|---|"]
        for layer in self.layers[:top]:
            lines.append(f"| {layer.rank} | {layer.op} | `{', '.join(layer.onnx_nodes) or layer.tensor}` | "
                         f"{layer.rmse_over_scale:.3f} | {layer.rmse:.4g} | {layer.scale:.4g} | {layer.max_abs_error:.4g} |")
        return "\n".join(lines) + "\n"

    def rich_table(self, top: int = 10):
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=f"int8 blame: worst layers by RMSE/scale (rounding alone = {self.ideal_rmse_over_scale:.3f})")
        for name in ("rank", "op", "ONNX node(s)", "RMSE/scale", "RMSE", "scale"):
            table.add_column(name, justify="left" if name in ("op", "ONNX node(s)") else "right")
        for layer in self.layers[:top]:
            style = "red" if layer.rmse_over_scale > 2 * self.ideal_rmse_over_scale else ""
            # node names come from the user's model: escaped, never read as rich markup
            table.add_row(str(layer.rank), layer.op, escape(", ".join(layer.onnx_nodes) or layer.tensor),
                          f"[{style}]{layer.rmse_over_scale:.3f}[/{style}]" if style else f"{layer.rmse_over_scale:.3f}",
                          f"{layer.rmse:.4g}", f"{layer.scale:.4g}")
        return table


def onnx_nodes_for_tensor(tensor_name: str, node_scopes: dict[str, str]) -> list[str]:
    """ONNX nodes whose TF scope produced `tensor_name` (fused ops join names with ';')."""
    by_scope = {scope: node for node, scope in node_scopes.items()}
    found = []
    for part in tensor_name.split(";"):
        matches = [s for s in by_scope if part == s or part.startswith(s + "/")]
        if matches:
            node = by_scope[max(matches, key=len)]   # the most specific scope, not a prefix of it
            if node not in found:
                found.append(node)
    return found


@dataclass
class CalibratedModel:
    """The float TFLite model annotated with calibrated per-tensor ranges (before quantization)."""

    flatbuffer: bytes
    node_scopes: dict[str, str]     # ONNX node name -> TF name scope (maps tensors back to nodes)
    calibration_images: int
    input_layout: str


def calibrate(onnx_model: onnx.ModelProto | str | Path, calibration_nchw: np.ndarray,
              input_layout: str = "nhwc", recipe=None) -> CalibratedModel:
    """Trace and calibrate exactly as the converter's int8 path does (the recipe's ranges), without
    quantizing. (Bias correction happens after quantization: blame's per-layer errors are before it.)"""
    import tensorflow as tf

    from mixdeploy.tflite import calibrate as tflite_calibrate
    from mixdeploy.tflite.convert import graph_for_recipe, load_onnx
    from mixdeploy.tflite.graph import trace_onnx

    if not isinstance(onnx_model, onnx.ModelProto):
        onnx_model = load_onnx(onnx_model)
    calibration_nchw = np.asarray(calibration_nchw, np.float32)
    if len(calibration_nchw) == 0:
        raise MixdeployError("blame needs calibration images (at least one)")
    recipe = get_recipe(recipe)
    onnx_model = graph_for_recipe(onnx_model, recipe, [])
    traced = trace_onnx(onnx_model, input_layout)
    float_model = tf.lite.TFLiteConverter.from_concrete_functions([traced.concrete_function], traced.module).convert()
    images = np.transpose(calibration_nchw, (0, 2, 3, 1)) if input_layout == "nhwc" else calibration_nchw
    ranges = tflite_calibrate.measure_ranges(float_model, images, recipe.range_method,
                                             small_method=recipe.small_range_method)
    return CalibratedModel(tflite_calibrate.annotate_ranges(float_model, ranges), dict(traced.node_scopes),
                           len(calibration_nchw), input_layout)


def blame_calibrated(calibrated: CalibratedModel, debug_nchw: np.ndarray) -> BlameReport:
    """Quantize `calibrated` with numeric-verify ops and let QuantizationDebugger measure each layer."""
    import tensorflow as tf
    from tensorflow.lite.python import convert as tf_convert

    from mixdeploy.tflite.quantize import representative_dataset

    debug_nchw = np.asarray(debug_nchw, np.float32)
    if len(debug_nchw) == 0:
        raise MixdeployError("blame needs debug images (at least one)")
    started = time.perf_counter()
    try:
        debug_model = tf_convert.mlir_quantize(calibrated.flatbuffer, disable_per_channel=False,
                                               enable_numeric_verify=True)
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=debug_model,
            debug_dataset=representative_dataset(debug_nchw, calibrated.input_layout == "nhwc", None))
        debugger.run()
    except Exception as err:  # the debugger surfaces converter errors as long MLIR dumps
        raise MixdeployError(f"QuantizationDebugger failed: {str(err).strip().splitlines()[0][:300]}; "
                             "run parity with --no-blame, or report the model") from err
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = _rank(list(csv.DictReader(io.StringIO(dump.getvalue()))), calibrated.node_scopes)
    return BlameReport(layers=layers, calibration_images=calibrated.calibration_images,
                       debug_images=len(debug_nchw), seconds=time.perf_counter() - started)


def _rank(rows: list[dict], node_scopes: dict[str, str]) -> list[LayerError]:
    layers = []
    for row in rows:
        scale = float(row["scale"] or "nan")
        mse = float(row["mean_squared_error"] or "nan")
        if row["op_name"] in DATA_MOVEMENT_OPS or not (scale > 0) or not math.isfinite(mse):
            continue
        rmse = math.sqrt(mse)
        layers.append(LayerError(rank=0, op=row["op_name"], tensor=row["tensor_name"],
                                 onnx_nodes=onnx_nodes_for_tensor(row["tensor_name"], node_scopes),
                                 rmse_over_scale=rmse / scale, rmse=rmse, scale=scale,
                                 max_abs_error=float(row["max_abs_error"]), mean_error=float(row["mean_error"])))
    layers.sort(key=lambda layer: layer.rmse_over_scale, reverse=True)
    for i, layer in enumerate(layers, 1):
        layer.rank = i
    return layers


def blame_int8(onnx_model: onnx.ModelProto | str | Path, calibration_nchw: np.ndarray,
               debug_nchw: np.ndarray | None = None, input_layout: str = "nhwc",
               recipe=None) -> BlameReport:
    """Per-layer int8 error of `onnx_model` quantized with `calibration_nchw`, measured on `debug_nchw`.

    Both image sets are NCHW float32, preprocessed like the model input. Cost: one calibration
    (~0.1-0.4 s per image) plus one debug-model run per debug image; keep both small (16-64).
    """
    started = time.perf_counter()
    calibrated = calibrate(onnx_model, calibration_nchw, input_layout, recipe)
    report = blame_calibrated(calibrated, calibration_nchw if debug_nchw is None else debug_nchw)
    report.seconds = time.perf_counter() - started
    return report


def suggest_keep_float(report: BlameReport, max_layers: int = 3, factor: float = 2.0) -> list[str]:
    """ONNX nodes of the worst layers whose error is over `factor` x pure rounding (at most `max_layers`)."""
    nodes: list[str] = []
    for layer in report.layers:
        if len(nodes) >= max_layers or layer.rmse_over_scale < factor * report.ideal_rmse_over_scale:
            break
        for node in layer.onnx_nodes:
            if node not in nodes:
                nodes.append(node)
    return nodes[:max_layers] if nodes else [n for n in (report.layers[0].onnx_nodes if report.layers else [])]


# ---------------------------------------------------------------- keep-float re-export


@dataclass
class ModelCost:
    path: str
    file_size: int
    latency_ms: float            # median LiteRT latency, batch 1
    threads: int


@dataclass
class KeepFloatResult:
    keep_float: list[str]
    path: Path
    baseline: ModelCost
    candidate: ModelCost

    @property
    def size_delta(self) -> int:
        return self.candidate.file_size - self.baseline.file_size

    @property
    def latency_ratio(self) -> float:
        return self.candidate.latency_ms / self.baseline.latency_ms if self.baseline.latency_ms else float("nan")

    def to_dict(self) -> dict:
        return {"keep_float": self.keep_float, "path": str(self.path), "baseline": asdict(self.baseline),
                "candidate": asdict(self.candidate), "size_delta_bytes": self.size_delta,
                "latency_ratio": round(self.latency_ratio, 3)}


def time_interleaved(baseline_tflite, candidate_tflite, runs: int = 30, warmup: int = 5,
                     threads: int = 1) -> tuple[ModelCost, ModelCost]:
    """Median single-image LiteRT latency of both models, timed in ONE interleaved run (the host
    bench's timer): load changes on a shared machine hit both alike, so the difference is the fix's."""
    from mixdeploy.bench.host import bench_models

    medians = bench_models({"baseline": baseline_tflite, "candidate": candidate_tflite}, threads=(threads,),
                           runs=runs, warmup=warmup)
    return tuple(ModelCost(path=str(path), file_size=Path(path).stat().st_size,
                           latency_ms=medians[label][str(threads)], threads=threads)
                 for label, path in (("baseline", baseline_tflite), ("candidate", candidate_tflite)))


def reexport_keep_float(onnx_model, keep_float: list[str], calibration_nchw: np.ndarray, out_path,
                        baseline_tflite, io_dtype: str = "int8", input_layout: str = "nhwc",
                        recipe=None) -> KeepFloatResult:
    """Convert again with `keep_float` ONNX nodes left in float; size both models and time them together."""
    from mixdeploy.tflite.convert import convert_onnx

    if not keep_float:
        raise MixdeployError("--keep-float needs at least one ONNX node name (or 'auto')")
    convert_onnx(onnx_model, out_path, precision="int8", calibration=calibration_nchw, io_dtype=io_dtype,
                 input_layout=input_layout, keep_float=keep_float, recipe=recipe)
    baseline, candidate = time_interleaved(baseline_tflite, out_path)
    return KeepFloatResult(keep_float=list(keep_float), path=Path(out_path), baseline=baseline, candidate=candidate)
