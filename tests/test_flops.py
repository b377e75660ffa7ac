"""MAC counting against independent references: the MixConv paper, torch's FlopCounterMode,
forward hooks on timm's models, and the ONNX graph of the same model; plus the CLI budget gate."""

import json

import pytest
import torch
from click.testing import CliRunner
from timm_oracle import timm
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cli import cli
from mixdeploy.errors import MixdeployError
from mixdeploy.flops import count_macs, stage_of
from mixdeploy.models import create_model

PAPER_MACS = {"mixnet-s": 256e6, "mixnet-m": 360e6, "mixnet-l": 565e6}  # MixConv paper, Table 2


def hook_conv_linear_macs(model: nn.Module, size: int) -> int:
    """Reference: forward hooks summing conv and linear multiply-accumulates."""
    total = 0

    def conv_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inputs, out):
        nonlocal total
        total += out.numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_macs_within_3_percent_of_paper(name):
    report = count_macs(name)
    assert report.input_size == 224
    assert abs(report.total / PAPER_MACS[name] - 1) < 0.03
    # the plain conv+linear count is the smaller part, the rest is elementwise work
    assert report.conv_linear_only < report.total < 1.1 * report.conv_linear_only


def test_conv_linear_part_equals_timm_hooks_and_flop_counter():
    ours = count_macs(create_model("mixnet-s"), input_size=96)
    assert ours.conv_linear_only == hook_conv_linear_macs(timm.create_model("mixnet_s"), 96)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        create_model("mixnet-s").eval()(torch.zeros(1, 3, 96, 96))
    assert 2 * ours.conv_linear_only == counter.get_total_flops()  # torch counts 2 FLOPs per MAC


def test_elementwise_part_counts_batchnorm_outputs():
    model = create_model("mixnet-m")
    report = count_macs(model, input_size=64)
    bn_elements = 0

    def hook(m, i, out):
        nonlocal bn_elements
        bn_elements += out.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert report.by_op_type["BatchNormalization"] == bn_elements
    assert report.total == sum(report.by_op_type.values()) == sum(report.by_stage.values())


def test_stages_and_params():
    model = create_model("mixnet-s")
    report = count_macs(model, input_size=64)
    assert list(report.by_stage) == ["stem"] + [f"blocks.{i}" for i in range(6)] + ["head", "classifier"]
    assert report.by_stage["classifier"] == 1536 * 1000
    assert report.params == sum(p.numel() for p in timm.create_model("mixnet_s").parameters())


@pytest.mark.parametrize("scopes,stage", [
    (["blocks", "blocks.2", "blocks.2.0", "conv_pw"], "blocks.2"),       # TorchScript exporter names
    (["blocks", "blocks.3", "blocks.3.1", "blocks.3.1.se"], "blocks.3"),  # dynamo name_scopes
    (["blocks.5.0.conv_dw.1"], "blocks.5"),                               # mixdeploy export node names
    (["conv_stem"], "stem"), (["bn2", "bn2.act"], "head"), (["classifier"], "classifier"),
    (["layer1", "layer1.0"], "layer1"), ([], "other"),
])
def test_stage_of_module_paths(scopes, stage):
    assert stage_of(scopes) == stage


def test_count_scales_with_input_area():
    small, large = (count_macs(create_model("mixnet-s"), input_size=s) for s in (64, 128))
    convs_small = small.by_op_type["Conv"]
    assert 3.5 < large.by_op_type["Conv"] / convs_small < 4.1  # ~4x, minus 'same'-size edge effects


@pytest.fixture(scope="module", params=["torch.onnx dynamo", "mixdeploy export_onnx"])
def mixnet_s_onnx(request, tmp_path_factory):
    """tf-mixnet-s as ONNX, from torch's default exporter at 64 px and from the project's
    export (TorchScript + onnxsim, module-path node names) at an odd 65 px."""
    path = tmp_path_factory.mktemp("onnx") / "tf_mixnet_s.onnx"
    model = create_model("tf-mixnet-s").eval()
    if request.param == "torch.onnx dynamo":
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), opset_version=18, dynamo=True)
    else:
        from mixdeploy.onnx.export import export_onnx

        export_onnx(model, 65, path)
    return path


def test_onnx_count_matches_torch_count(mixnet_s_onnx):
    onnx_report = count_macs(mixnet_s_onnx)
    torch_report = count_macs(create_model("tf-mixnet-s"), input_size=onnx_report.input_size)
    assert onnx_report.input_size in (64, 65)
    assert onnx_report.conv_linear_only == torch_report.conv_linear_only
    assert onnx_report.by_op_type["Swish"] == torch_report.by_op_type["Swish"]
    # the exporter folds BN into the convs where it can: fewer BN ops, nothing else changes
    assert onnx_report.by_op_type["BatchNormalization"] < torch_report.by_op_type["BatchNormalization"]
    assert onnx_report.by_stage.keys() == torch_report.by_stage.keys()
    assert onnx_report.by_stage["blocks.3"] <= torch_report.by_stage["blocks.3"]


def test_onnx_fixed_size_conflict(mixnet_s_onnx):
    with pytest.raises(MixdeployError, match="fixed input size 6[45]x6[45]"):
        count_macs(mixnet_s_onnx, input_size=224)


# ---------------------------------------------------------------- CLI

def run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_flops_gate_exits_1_over_budget_and_0_under():
    macs = count_macs("mixnet-s").total
    over = run("flops", "mixnet-s", "--max-macs", str(macs - 1))
    assert over.exit_code == 1 and "over budget" in over.output
    under = run("flops", "mixnet-s", "--max-macs", "600M")
    assert under.exit_code == 0 and "within" in under.output
    assert run("flops", "mixnet-l", "--max-macs", "0.5G").exit_code == 1
    assert run("flops", "mixnet-l", "--max-macs", "600000000").exit_code == 0


def test_flops_json_and_bad_budget():
    result = run("flops", "mixnet-m", "--json", "--input-size", "64", "--max-macs", "1.2G")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["within_budget"] is True and data["max_macs"] == 1_200_000_000
    assert data["macs"] == count_macs(create_model("mixnet-m"), input_size=64).total
    bad = run("flops", "mixnet-s", "--max-macs", "lots")
    assert bad.exit_code == 2 and "not a count" in bad.output


def test_flops_unknown_model_is_a_usage_error():
    result = run("flops", "mixnet-q")
    assert result.exit_code == 2 and "unknown model 'mixnet-q'" in result.output


def test_flops_on_onnx_file(mixnet_s_onnx):
    result = run("flops", str(mixnet_s_onnx), "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["conv_linear_macs"] == count_macs(mixnet_s_onnx).conv_linear_only
