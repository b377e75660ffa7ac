"""concat_free (the `per-branch` int8 recipe): the rewrite keeps the function (onnxruntime on the graph
before it), and in int8 a MixConv branch squeezed by the shared CONCATENATION scale gets its own back."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mixdeploy.onnx.rewrite import rewrite
from rewrite_helpers import GraphBuilder, assert_same_function, ops, random_input

CHECKPOINT = Path(__file__).resolve().parents[1] / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist.pt"
NO_PADS = [0, 0, 0, 0]


def inputs_for(model, seeds=(0, 1)):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return [random_input(shape, s) for s in seeds]


def mixconv_block(sizes, kernels, act="swish", se=True, pwl_group=1, batchnorm=False, out=8):
    """MixConv -> [BN] -> act -> [SE] -> 1x1 conv: the shape of a MixNet block after the rewrite."""
    g = GraphBuilder(channels=sum(sizes), hw=10)
    channels = sum(sizes)
    y = g.mixconv("x", sizes, kernels)
    if batchnorm:
        y = g.batchnorm(y, channels)
    y = g.node("Mul", [y, g.node("Sigmoid", [y])]) if act == "swish" else g.node("Relu", [y])
    if se:
        pooled = g.node("ReduceMean", [y], axes=[2, 3], keepdims=1)
        reduced = g.conv(pooled, channels, 4, 1, pads=NO_PADS)
        reduced = g.node("Mul", [reduced, g.node("Sigmoid", [reduced])])
        y = g.node("Mul", [y, g.node("Sigmoid", [g.conv(reduced, 4, channels, 1, pads=NO_PADS)])])
    return g.model(g.conv(y, channels, out, 1, group=pwl_group, pads=NO_PADS))


def concat_free(model):
    result = rewrite(model, passes=["concat_free"])
    return result.model, result.report.passes[0].details


def concat_input_producers(model) -> set[str]:
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    return {producers.get(i) for n in model.graph.node if n.op_type == "Concat" for i in n.input}


BLOCKS = {
    "swish_se_dense_pwl": dict(sizes=[8, 8], kernels=[3, 5]),
    "swish_se_grouped_pwl_straddling_branch": dict(sizes=[6, 6, 4], kernels=[3, 5, 7], pwl_group=2),
    "relu_grouped_pwl_aligned": dict(sizes=[4, 4, 8], kernels=[3, 5, 7], act="relu", se=False, pwl_group=2),
    "batchnorm_before_swish": dict(sizes=[8, 4, 4], kernels=[3, 5, 9], batchnorm=True),
}


@pytest.mark.parametrize("case", sorted(BLOCKS))
def test_concat_free_keeps_the_function_of_a_mixconv_block(case):
    model = mixconv_block(**BLOCKS[case])
    out, details = concat_free(model)
    assert len(details["matched"]) == 1 and details["skipped"] == []
    assert_same_function(model, out, inputs_for(model))
    block, branches = BLOCKS[case], len(BLOCKS[case]["sizes"])
    if block.get("pwl_group", 1) == 1:   # partial convs summed: the SE's reduce conv and the 1x1 conv
        assert "Concat" not in ops(out)
        assert ops(out).count("Add") == (branches - 1) * (2 if block.get("se", True) else 1)
    else:   # only the conv groups' sums are joined; no depthwise branch feeds a Concat
        assert ops(out).count("Concat") == 1 and concat_input_producers(out) <= {"Add", "Conv"}
        assert all(_group(n) == 1 for n in out.graph.node if _is_pointwise(out, n))
    if block.get("act", "swish") == "swish":   # the swish runs per branch (+2 in the SE)
        assert ops(out).count("Sigmoid") == branches + (2 if block.get("se", True) else 0)


def _group(node) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _is_pointwise(model, node) -> bool:
    inits = {i.name: i for i in model.graph.initializer}
    return node.op_type == "Conv" and tuple(inits[node.input[1]].dims[2:]) == (1, 1)


def test_concat_free_leaves_a_concat_it_cannot_push_down():
    g = GraphBuilder(channels=8, hw=10)
    y = g.node("MaxPool", [g.mixconv("x", [4, 4], [3, 5])], kernel_shape=[2, 2])
    model = g.model(g.conv(y, 8, 8, 1, pads=NO_PADS))
    out, details = concat_free(model)
    assert ops(out) == ops(model)
    assert details["matched"] == [] and "MaxPool" in details["skipped"][0]["reason"]


def test_concat_free_leaves_a_concat_that_is_a_graph_output():
    g = GraphBuilder(channels=8, hw=10)
    model = g.model(g.node("Relu", [g.mixconv("x", [4, 4], [3, 5])]))
    out, details = concat_free(model)
    assert ops(out) == ops(model) and details["matched"] == []


@pytest.fixture(scope="module")
def mixnet_s(tmp_path_factory):
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx

    loaded = load_model(str(CHECKPOINT))
    path = tmp_path_factory.mktemp("concat-free") / "model.onnx"
    export_onnx(loaded.module, loaded.preprocessing.input_size, path)
    return onnx.load(str(path))


@pytest.mark.parametrize("lowering", ["split", "decompose"])
def test_concat_free_keeps_the_function_of_mixnet_s(mixnet_s, lowering):
    result = rewrite(mixnet_s, lowering=lowering)
    rewritten = result.model
    out, details = concat_free(rewritten)
    assert len(details["matched"]) == len(result.report.mixconvs) >= 10   # every MixConv
    assert details["skipped"] == []
    assert_same_function(rewritten, out, inputs_for(rewritten))
    # what is left: the Concats joining a grouped conv_pwl's two halves (fewer than before)
    assert ops(out).count("Concat") < ops(rewritten).count("Concat")
    assert concat_input_producers(out) <= {"Add", "Conv"}


# --- int8: a mis-scaled branch -------------------------------------------------------------------------

def mis_scaled_mixconv(factor: float) -> onnx.ModelProto:
    """Split -> depthwise 3x3 | 5x5 -> Concat -> 1x1 conv, with the 5x5 branch's weights and bias
    x factor and the 1x1 conv's weights for its channels / factor: the same function for any factor,
    but that branch's range is `factor` times the other's."""
    g = GraphBuilder(channels=16, hw=16)
    model = g.model(g.conv(g.mixconv("x", [8, 8], [3, 5]), 16, 8, 1, pads=NO_PADS))
    inits = {i.name: i for i in model.graph.initializer}
    _, big_branch, pointwise = [n for n in model.graph.node if n.op_type == "Conv"]

    def rescale(name, by, where):
        array = numpy_helper.to_array(inits[name]).copy()
        array[where] *= by
        inits[name].CopyFrom(numpy_helper.from_array(array, name))
    rescale(big_branch.input[1], factor, slice(None))
    rescale(big_branch.input[2], factor, slice(None))
    rescale(pointwise.input[1], 1.0 / factor, (slice(None), slice(8, 16)))
    return model


def int8_relative_rmse(model, recipe, calibration, test, tmp_path) -> tuple[float, dict]:
    from mixdeploy.runtimes import OnnxRunner, TfliteRunner
    from mixdeploy.tflite.convert import convert_onnx
    from mixdeploy.tflite.inspect import inspect_tflite

    path = tmp_path / f"{recipe}.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = convert_onnx(model, path, precision="int8", calibration=calibration, io_dtype="float32",
                              recipe=recipe)
    n = len(test)
    reference = OnnxRunner(model).run(test).reshape(n, -1)                              # NCHW
    got = TfliteRunner(path).run(test).reshape(n, 16, 16, 8).transpose(0, 3, 1, 2).reshape(n, -1)   # NHWC out
    rmse = float(np.sqrt(np.mean((got - reference) ** 2) / np.mean(reference ** 2)))
    return rmse, {"ops": inspect_tflite(path).op_histogram, "result": result}


def test_per_branch_recipe_repairs_a_mis_scaled_branch(tmp_path):
    rng = np.random.default_rng(0)
    calibration = rng.standard_normal((32, 16, 16, 16)).astype(np.float32)
    test = rng.standard_normal((32, 16, 16, 16)).astype(np.float32)
    well_scaled, _ = int8_relative_rmse(mis_scaled_mixconv(1.0), "default", calibration, test, tmp_path / "w")
    mis_scaled = mis_scaled_mixconv(50.0)
    assert_same_function(mis_scaled_mixconv(1.0), mis_scaled, [test[:1]])     # the same float function
    shared, base = int8_relative_rmse(mis_scaled, "default", calibration, test, tmp_path)
    own, fixed = int8_relative_rmse(mis_scaled, "per-branch", calibration, test, tmp_path)
    # measured: well-scaled 0.017, mis-scaled with the shared concat scale 0.34, per-branch 0.019
    assert shared > 8 * well_scaled                 # the shared scale squeezes the small branch
    assert own < shared / 5                         # per-branch scales repair it ...
    assert own < 1.5 * well_scaled                  # ... to about the error of the well-scaled model
    assert base["ops"].get("CONCATENATION") == 1 and "ADD" not in base["ops"]
    assert "CONCATENATION" not in fixed["ops"] and fixed["ops"]["ADD"] == 1 and fixed["ops"]["CONV_2D"] == 2
    assert fixed["result"].quantization["recipe"]["concat_free"] is True
    assert any(note.startswith("concat-free: 1 channel concat") for note in fixed["result"].notes)
