"""Whole networks: every pass alone and all together keep the function (onnxruntime on the
exported graph is the reference), on random inputs and a real photo, at 64x64."""

from __future__ import annotations

import onnx
import pytest

from mixdeploy.onnx.export import export_onnx
from mixdeploy.onnx.rewrite import ALL_PASSES, DEFAULT_PASSES, rewrite
from rewrite_helpers import assert_same_function, chelsea, ops, random_input
from timm_oracle import timm

SIZE = 64
INPUTS = [random_input((1, 3, SIZE, SIZE), 0), chelsea(SIZE)]


def ours(name):
    from mixdeploy.models import load_model

    return load_model(name).module


# ours and timm's; tf_ variants carry TF-'same' padding (Pad nodes before stride-2 branches).
NETWORKS = {
    "mixnet-s": lambda: ours("mixnet-s"),
    "mixnet-m": lambda: ours("mixnet-m"),
    "mixnet-l": lambda: ours("mixnet-l"),
    "tf-mixnet-s": lambda: ours("tf-mixnet-s"),
    "timm:mixnet_s": lambda: timm.create_model("mixnet_s"),
    "timm:tf_mixnet_m": lambda: timm.create_model("tf_mixnet_m"),
}


@pytest.fixture(scope="module", params=sorted(NETWORKS))
def exported(request, tmp_path_factory):
    module = NETWORKS[request.param]()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(module, SIZE, path)
    return request.param, onnx.load(path)


def split_conv1x1_concat_left(model: onnx.ModelProto) -> int:
    producers = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    count = 0
    for concat in (n for n in model.graph.node if n.op_type == "Concat"):
        convs = [producers.get(i) for i in concat.input]
        if all(c is not None and c.op_type == "Conv" for c in convs):
            kernels = [tuple(inits[c.input[1]].dims[2:]) for c in convs]
            splits = {producers.get(c.input[0]).op_type if producers.get(c.input[0]) else None for c in convs}
            count += kernels and all(k == (1, 1) for k in kernels) and splits == {"Split"}
    return count


def pads_before_conv_left(model: onnx.ModelProto) -> int:
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return sum(1 for n in model.graph.node if n.op_type == "Pad"
               and any(c.op_type == "Conv" for c in consumers.get(n.output[0], [])))


@pytest.mark.parametrize("lowering", ["split", "pad", "decompose", "pad_decompose"])
def test_default_passes_keep_the_function(exported, lowering):
    name, model = exported
    result = rewrite(model, lowering=lowering)
    assert_same_function(model, result.model, INPUTS)
    out = result.model
    assert "BatchNormalization" not in ops(out)
    assert split_conv1x1_concat_left(out) == 0
    assert pads_before_conv_left(out) == 0  # decompose's Pads feed Slices, never a Conv directly
    assert len(result.report.mixconvs) >= 10  # MixNets have 10+ MixConv layers
    report = result.report.to_dict()
    assert [p["name"] for p in report["passes"]] == list(DEFAULT_PASSES)
    # a layer the lowering cannot improve keeps a simpler form (pad_decompose of a 3/5 MixConv is pad)
    allowed = {"split", lowering} | ({"pad"} if lowering == "pad_decompose" else set())
    choices = set(result.report.lowering_choices.values())
    assert choices <= allowed
    assert lowering in choices   # at least one layer took the lowering asked for (every layer, for split)


@pytest.mark.parametrize("pass_name", ALL_PASSES)
def test_each_pass_alone_keeps_the_function(exported, pass_name):
    name, model = exported
    result = rewrite(model, lowering="decompose", passes=[pass_name])
    assert_same_function(model, result.model, INPUTS[:1])


def test_rewrite_verify_runs_onnxruntime(exported):
    name, model = exported
    result = rewrite(model, lowering="decompose", passes=["fold_batchnorm", "lower_mixconv"], verify=True)
    assert 0 <= result.report.verified_rel_err < 1e-5


def test_report_counts_ops_and_macs(exported):
    name, model = exported
    report = rewrite(model, lowering="pad").report
    fold = report.passes[DEFAULT_PASSES.index("fold_batchnorm")]
    assert fold.ops_before.get("BatchNormalization", 0) > 0 and fold.ops_after.get("BatchNormalization", 0) == 0
    lower = report.passes[DEFAULT_PASSES.index("lower_mixconv")]
    # the pad lowering computes zeros: its MAC increase is exactly what it reports
    assert lower.macs_after - lower.macs_before == lower.details["extra_macs"] > 0
    assert report.to_table().row_count == len(DEFAULT_PASSES)


def test_tf_same_pads_fold_into_convs(tmp_path):
    """timm's tf_ models export Pad nodes (onnxsim folds them; without it fold_pad must)."""
    path = tmp_path / "tf.onnx"
    export_onnx(timm.create_model("tf_mixnet_s"), SIZE, path, simplify=False)
    raw = onnx.load(path)
    import onnxsim  # constant-fold the run-time pad arithmetic, but keep the Pad nodes

    model, ok = onnxsim.simplify(raw, skipped_optimizers=["fuse_pad_into_conv"])
    assert ok and pads_before_conv_left(model) > 0
    result = rewrite(model, lowering="split")
    assert pads_before_conv_left(result.model) == 0
    assert_same_function(model, result.model, INPUTS)


def test_non_mixnet_passes_through_untouched(tmp_path):
    path = tmp_path / "mbv2.onnx"
    export_onnx(timm.create_model("mobilenetv2_100"), SIZE, path)
    model = onnx.load(path)
    result = rewrite(model, lowering="decompose")
    assert result.report.mixconvs == []
    assert ops(result.model) == ops(model)
    assert result.report.lowering_choices == {}
    assert_same_function(model, result.model, INPUTS[:1])
