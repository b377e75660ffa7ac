"""Every rewrite pass says what it touched and, for what it left alone, why (PassOutcome.declined):
on a plain depthwise net where no pass has work, and on MixNet-S at 32 px, whose touched counts are
checked against the layers of the PyTorch module."""

from __future__ import annotations

import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from cli import cli
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx import rewrite as rewrite_module
from mixdeploy.onnx.export import export_onnx
from mixdeploy.onnx.passes import GRAPH, PassOutcome
from mixdeploy.onnx.rewrite import ALL_PASSES, rewrite
from rewrite_helpers import assert_same_function, ops, random_input

SIZE = 32


class PlainDepthwise(nn.Module):
    """No MixConv, no Split/Slice/Concat; a BN after a ReLU and a reflect pad, which no pass can fold."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = self.bn(torch.relu(self.stem(x)))
        x = self.dw(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    torch.manual_seed(0)
    net = PlainDepthwise().eval()
    with torch.no_grad():   # non-trivial statistics, so a wrong fold would show
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("plain") / "plain.onnx"
    export_onnx(net, SIZE, path)
    model = onnx.load(path)
    return model, rewrite(model, lowering="split", passes=ALL_PASSES)


def test_no_pass_touches_a_plain_depthwise_net_and_each_says_why(plain):
    model, result = plain
    assert ops(result.model) == ops(model)            # nothing rewritten: the reasons are not a cover story
    assert_same_function(model, result.model, [random_input((1, 3, SIZE, SIZE))])
    by_pass = {p.name: p for p in result.report.passes}
    assert all(p.touched == [] for p in by_pass.values())
    pad = next(n.name for n in model.graph.node if n.op_type == "Pad")
    bn = next(n.name for n in model.graph.node if n.op_type == "BatchNormalization")
    expected = {   # pass -> (node, words its reason must hold)
        "fold_pad": (pad, "constant-zero Pad"),
        "fold_batchnorm": (bn, "not a Conv's"),
        "slices_to_split": (GRAPH, "no Slice"),
        "recognize_mixconv": (GRAPH, "no Split"),
        "fuse_grouped_pointwise": (GRAPH, "no Split"),
        "lower_mixconv": (GRAPH, "no MixConv"),
        "piece_pads": (pad, "constant-zero Pad"),
        "relu_into_branches": (GRAPH, "no Concat"),
        "concat_free": (GRAPH, "no Concat"),
    }
    assert set(expected) == set(ALL_PASSES)
    for name, (node, words) in expected.items():
        [declined] = by_pass[name].declined
        assert declined.node == node and words in declined.reason, (name, declined)
    assert by_pass["fold_batchnorm"].details["left_unfolded"] == [bn]   # the old field stays


def test_reasons_reach_the_manifest_form_and_the_lines_export_prints(plain):
    from mixdeploy.views.rewrite import declined_lines

    _, result = plain
    report = result.report.to_dict()
    fold_pad = next(p for p in report["passes"] if p["name"] == "fold_pad")
    assert fold_pad["declined"][0]["reason"].startswith("not a constant-zero Pad")
    lines = declined_lines(report)
    assert len(lines) == len(ALL_PASSES) and lines[-1] == "concat_free declined 1: no Concat in the graph"
    assert result.report.to_table().row_count == len(ALL_PASSES)


def test_a_pad_read_by_no_conv_is_declined_not_a_bug():
    """A Pad whose output is the graph's output (or unread) has no Conv to fold into: a reason,
    not the rewrite loop's "touched nothing and did not say why"."""
    from onnx import TensorProto, helper

    pads = helper.make_tensor("pads", TensorProto.INT64, [8], [0, 0, 1, 1, 0, 0, 1, 1])
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 6, 6])], [pads])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    result = rewrite(model, lowering="split", passes=["fold_pad"])
    [declined] = result.report.passes[0].declined
    assert declined.node == "pad" and declined.reason == "its output is a graph output"
    assert ops(result.model) == ["Pad"]


def test_a_pass_that_touches_nothing_without_a_reason_is_a_bug(plain, monkeypatch):
    model, _ = plain
    monkeypatch.setitem(rewrite_module.PASSES, "fold_pad", lambda m, options: PassOutcome())
    with pytest.raises(MixdeployError, match="fold_pad touched nothing and did not say why"):
        rewrite(model, lowering="split", passes=["fold_pad"])


@pytest.fixture(scope="module")
def mixnet_s(trained_model, tmp_path_factory):
    from mixdeploy.models import MixConv2d

    path = tmp_path_factory.mktemp("mixnet") / "m.onnx"
    export_onnx(trained_model.module, SIZE, path)
    groups = [m for m in trained_model.module.modules() if isinstance(m, MixConv2d) and len(m.kernel_sizes) > 1]
    return onnx.load(path), groups


@pytest.mark.parametrize("lowering", ["split", "decompose"])
def test_mixnet_touched_counts_match_the_module(mixnet_s, lowering):
    model, groups = mixnet_s
    mixconvs = [m for m in groups if m.depthwise]
    pointwise = [m for m in groups if not m.depthwise and set(m.kernel_sizes) == {1}]
    large = [m for m in mixconvs if max(m.kernel_sizes) ** 2 > 25]   # past XNNPACK's 25-tap fast path
    passes = {p.name: p for p in rewrite(model, lowering=lowering).report.passes}
    assert len(passes["recognize_mixconv"].touched) == len(mixconvs) >= 10
    assert len(passes["fuse_grouped_pointwise"].touched) == len(pointwise) > 0
    assert len(groups) == len(mixconvs) + len(pointwise)   # no other kind of multi-group conv
    # every concat-joined BN folds into its group's convs: a BN and one conv per group
    assert len(passes["fold_batchnorm"].touched) == sum(len(m.kernel_sizes) + 1 for m in groups)
    lower = passes["lower_mixconv"]
    assert len(lower.touched) == (len(large) if lowering == "decompose" else 0)
    assert len(lower.touched) + len(lower.declined) == len(mixconvs)   # each layer touched or declined
    reason = "no kernel over 25 taps" if lowering == "decompose" else "split asked"
    assert all(reason in d.reason for d in lower.declined)
    # the pointwise splits are not MixConvs, and the MixConvs are not dense 1x1 splits: each says so
    not_depthwise = "not a MixConv: its part Convs are not all depthwise"
    assert {d.reason for d in passes["recognize_mixconv"].declined} == {not_depthwise}
    assert len(passes["fuse_grouped_pointwise"].declined) == len(mixconvs)


def test_export_verbose_shows_the_reasons(trained_checkpoint, tmp_path):
    import json

    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["export", "mixnet-s", "--weights", str(trained_checkpoint), "--format", "onnx",
                                      "--lowering", "split", "-v", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "ONNX rewrite (lowering=split)" in result.output
    passes = {p["name"]: p for p in json.loads((out / "manifest.json").read_text())["stages"]["rewrite"]["passes"]}
    layers = len(passes["recognize_mixconv"]["touched"])
    # one line per pass that declined something, from what the manifest records
    assert (f"lower_mixconv declined {layers}: split asked: the Split -> depthwise Convs -> Concat form stays "
            f"({passes['lower_mixconv']['declined'][0]['node']} and {layers - 1} more)") in result.output
    assert "fold_pad declined 1: no Pad in the graph" in result.output
