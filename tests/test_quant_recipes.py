"""int8 recipes (mixdeploy.tflite.recipe): each technique keeps the float model's function, and each
does what it claims on its own (ranges, small-tensor rule, bias correction, weight rounding).

The model-level checks use the committed 32-px checkpoint (fast); the 224-px accuracy of each
technique is a benchmark (benchmarks/accuracy.py, docs/accuracy.md), not a test.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from mixdeploy.tflite import calibrate, weight_rounding
from mixdeploy.tflite.recipe import RECIPES, get_recipe

CHECKPOINT = Path(__file__).resolve().parents[1] / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist.pt"

# every recipe that ships, plus the techniques that are not (yet) in one
TECHNIQUES = {**RECIPES, "weight-rounding": dataclasses.replace(RECIPES["default"], name="weight-rounding",
                                                                 weight_rounding=True)}


# --- the techniques on their own --------------------------------------------------------------------------

def test_channel_vectors_are_told_by_shape_not_size():
    assert calibrate.is_channel_vector(np.zeros((1, 1, 960)))      # an SE vector / pooled features (H,W,C)
    assert calibrate.is_channel_vector(np.zeros(10))               # logits
    assert not calibrate.is_channel_vector(np.zeros((2, 2, 8)))    # 32 values, but a feature map


def test_range_methods_order_as_documented():
    observer = calibrate.RangeObserver("avgminmax")
    rng = np.random.default_rng(0)
    for _ in range(16):
        observer.observe(0, rng.standard_normal((8, 8, 4)) * rng.uniform(0.5, 2.0))
    highs = {m: observer._range(0, m)[1] for m in ("avgminmax", "midminmax", "minmax")}
    assert highs["avgminmax"] < highs["midminmax"] < highs["minmax"]
    assert highs["midminmax"] == pytest.approx((highs["avgminmax"] + highs["minmax"]) / 2)


def test_trimmed_midminmax_ignores_a_few_outlier_images():
    observer = calibrate.RangeObserver("trimmed-midminmax")
    rng = np.random.default_rng(1)
    for i in range(64):
        values = rng.uniform(-1.0, 1.0, (8, 8, 4))
        values[0, 0, 0] = 50.0 if i < 3 else 1.0       # 3 of 64 images carry a 50x extreme
        observer.observe(0, values)
    low, high = observer._range(0, "trimmed-midminmax")
    mean_max = (3 * 50.0 + 61 * 1.0) / 64
    assert high == pytest.approx((mean_max + 1.0) / 2)   # the 8th largest max is an ordinary image's
    assert high < 3
    assert observer._range(0, "midminmax")[1] > 20       # midminmax goes halfway to the outlier
    assert -1.0 <= low < -0.9
    # with no outliers it is midminmax's neighbour: between avgminmax and minmax
    plain = calibrate.RangeObserver("trimmed-midminmax")
    for _ in range(16):
        plain.observe(0, rng.standard_normal((8, 8, 4)) * rng.uniform(0.5, 2.0))
    assert plain._range(0, "avgminmax")[1] <= plain._range(0, "trimmed-midminmax")[1] <= plain._range(0, "minmax")[1]


def test_small_rule_applies_to_vectors_only():
    observer = calibrate.RangeObserver("avgminmax", small_method="minmax")
    observer.observe(0, np.full((1, 1, 4), 1.0))
    observer.observe(0, np.full((1, 1, 4), 3.0))
    observer.observe(1, np.full((4, 4, 4), 1.0))
    observer.observe(1, np.full((4, 4, 4), 3.0))
    ranges = observer.ranges()
    assert ranges[0][1] == 3.0     # vector: global max (minmax)
    assert ranges[1][1] == 2.0     # feature map: mean of per-image maxima (avgminmax)


def _output_error(weights, q, scales, moment):
    delta = q.astype(np.float64) * scales[:, None] - weights
    return float(np.einsum("rk,kl,rl->", delta, moment, delta))


def test_weight_rounding_lowers_the_output_error_round_to_nearest_leaves():
    rng = np.random.default_rng(3)
    taps, rows = 27, 16
    inputs = rng.standard_normal((4000, 8)) @ rng.standard_normal((8, taps))   # correlated inputs
    moment = inputs.T @ inputs / len(inputs)
    weights = rng.standard_normal((rows, taps)) * 0.2
    scales = np.abs(weights).max(1) / 127
    nearest = np.clip(np.rint(weights / scales[:, None]), -127, 127).astype(np.int8)
    rounded = weight_rounding.round_rows(weights, scales, moment)
    assert rounded.dtype == np.int8 and np.abs(rounded.astype(int) - nearest).max() <= 2   # near nearest
    assert _output_error(weights, rounded, scales, moment) < 0.5 * _output_error(weights, nearest, scales, moment)
    # one moment per row gives the same answer when the rows' moments are equal
    per_row = weight_rounding.round_rows(weights, scales, np.repeat(moment[None], rows, axis=0))
    np.testing.assert_array_equal(per_row, rounded)


def test_unknown_recipe_names_the_choices():
    from mixdeploy.errors import MixdeployError

    with pytest.raises(MixdeployError, match="choose one of default"):
        get_recipe("adaround")


# --- each technique on a real MixNet: int8 still computes the float function ----------------------------

@pytest.fixture(scope="module")
def float_and_data(tmp_path_factory):
    from mixdeploy.data import load_images
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.runtimes import OnnxRunner

    loaded = load_model(str(CHECKPOINT))
    pre = loaded.preprocessing
    work = tmp_path_factory.mktemp("recipes")
    exported = export_onnx(loaded.module, pre.input_size, work / "model.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="split").model
    calibration = load_images("fashion-mnist", pre, limit=64, split="train").images
    test = load_images("fashion-mnist", pre, limit=300).images
    reference = OnnxRunner(str(exported.path)).run(test)
    return rewritten, calibration, test, reference, work


@pytest.fixture(scope="module")
def int8_by_technique(float_and_data):
    from mixdeploy.runtimes import TfliteRunner
    from mixdeploy.tflite.convert import convert_onnx

    rewritten, calibration, test, reference, work = float_and_data
    logits, notes = {}, {}
    for name, recipe in TECHNIQUES.items():
        path = work / f"{name}.tflite"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = convert_onnx(rewritten, path, precision="int8", calibration=calibration,
                                  io_dtype="float32", recipe=recipe)
        logits[name], notes[name] = TfliteRunner(str(path)).run(test), result.notes
    return logits, notes


def _cosine(a, b):
    return float(np.mean(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


@pytest.mark.slow
@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_each_technique_keeps_the_function(float_and_data, int8_by_technique, technique):
    reference = float_and_data[3]
    logits = int8_by_technique[0][technique]
    # measured on these 300 images: agreement 98.0-99.3%, cosine 0.992-0.998 across the techniques
    assert np.mean(logits.argmax(1) == reference.argmax(1)) >= 0.97
    assert _cosine(logits, reference) >= 0.985


@pytest.mark.slow
def test_techniques_change_the_model_and_say_so(int8_by_technique):
    logits, notes = int8_by_technique
    assert any("bias correction" in n for n in notes["default"])
    assert not any("bias correction" in n for n in notes["no-bias-correction"])
    assert any("weight rounding" in n for n in notes["weight-rounding"])
    # every technique yields its own int8 model (no recipe field silently ignored)
    names = list(logits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not np.array_equal(logits[a], logits[b]), (a, b)


def _one_conv_model(weights: np.ndarray) -> onnx.ModelProto:
    from onnx import TensorProto, helper, numpy_helper

    out_channels, in_channels, kh, kw = weights.shape
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["output"], pads=[1, 1, 1, 1], name="conv")],
        "one_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, in_channels, 16, 16])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, out_channels, 16, 16])],
        [numpy_helper.from_array(weights.astype(np.float32), "w"),
         numpy_helper.from_array(np.zeros(out_channels, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_bias_correction_removes_the_mean_shift_of_weight_rounding(tmp_path):
    """Weights that all sit 0.45 of a step above an int8 value round down together: the conv's
    int8 output is shifted by -0.45 step * sum of the input means. Bias correction folds that
    shift back into the bias."""
    from mixdeploy.runtimes import OnnxRunner, TfliteRunner
    from mixdeploy.tflite.convert import convert_onnx

    rng = np.random.default_rng(0)
    steps = rng.integers(-100, 100, size=(8, 3, 3, 3)).astype(np.float64) + 0.45
    steps[:, 0, 0, 0] = 127                                   # pins each channel's scale to 1/127 of its max
    weights = steps / 127 * 0.05
    model = _one_conv_model(weights)
    images = rng.uniform(0.0, 1.0, size=(64, 3, 16, 16)).astype(np.float32)   # positive mean inputs
    onnx.save(model, str(tmp_path / "conv.onnx"))
    reference = OnnxRunner(str(tmp_path / "conv.onnx")).run(images[32:])
    shifts = {}
    for name in ("default", "no-bias-correction"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_onnx(model, tmp_path / f"{name}.tflite", precision="int8", calibration=images[:32],
                         io_dtype="float32", recipe=name)
        out = TfliteRunner(str(tmp_path / f"{name}.tflite")).run(images[32:])
        shifts[name] = abs(float(out.mean() - reference.mean()))   # layout-free: every channel shifts down
    expected = 0.45 * 0.05 / 127 * 27 * 0.5                              # step * taps * mean input
    assert shifts["no-bias-correction"] == pytest.approx(expected, rel=0.35)
    assert shifts["default"] < 0.25 * shifts["no-bias-correction"]


# --- the calibration run itself ----------------------------------------------------------------------------

def test_calibration_on_xnnpack_measures_what_the_builtin_kernels_do(float_and_data):
    """Every activation tensor is made a graph output so XNNPACK keeps it; the reference is LiteRT's
    builtin kernels with every tensor preserved. The model's own output keeps its full range."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from mixdeploy.tflite.convert import convert_onnx

    rewritten, calibration, _, _, work = float_and_data
    path = work / "calibrated_float.tflite"
    convert_onnx(rewritten, path, precision="fp32")
    float_model = path.read_bytes()
    images = np.transpose(calibration[:16], (0, 2, 3, 1))
    tensors, _ = calibrate.activation_tensors(float_model)

    reference = Interpreter(model_content=float_model, experimental_preserve_all_tensors=True,
                            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    reference.allocate_tensors()
    low, high = {}, {}
    for image in images:
        reference.set_tensor(reference.get_input_details()[0]["index"], image[None])
        reference.invoke()
        for index in tensors:
            values = reference.get_tensor(index)
            low[index] = min(low.get(index, np.inf), float(values.min()))
            high[index] = max(high.get(index, -np.inf), float(values.max()))

    measured = calibrate.calibrate_float_model(float_model, images, "minmax").ranges
    assert set(measured) == set(tensors)
    for index in tensors:
        width = max(high[index], 0.0) - min(low[index], 0.0)
        assert measured[index] == pytest.approx((min(low[index], 0.0), max(high[index], 0.0)), abs=1e-5 * width + 1e-7)
    output = reference.get_output_details()[0]["index"]
    clipped = calibrate.calibrate_float_model(float_model, images, "avgminmax").ranges
    assert clipped[output] == measured[output]                       # the logits: full range
    assert sum(clipped[i] != measured[i] for i in tensors) > len(tensors) / 2   # the rest: avgminmax
