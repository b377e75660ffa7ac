"""MixConv2d against independent references: timm's MixedConv2d, plain convs, the paper, onnxruntime."""

import io
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from timm_oracle import timm  # noqa: F401  (patched import; makes timm.layers importable)
from timm.layers.mixed_conv2d import MixedConv2d, _split_channels
from torch import nn

from mixdeploy.models.mixconv import (MixConv2d, create_conv2d, replace_depthwise_with_mixconv,
                                      split_channels_equal, split_channels_exponential)


# ---------------------------------------------------------------- partitions

@pytest.mark.parametrize("channels,groups", [(32, 4), (40, 3), (120, 4), (7, 2), (200, 5), (3, 3)])
def test_equal_partition_matches_timm(channels, groups):
    assert split_channels_equal(channels, groups) == _split_channels(channels, groups)


def test_equal_partition_remainder_goes_to_the_smallest_kernel():
    split = split_channels_equal(10, 3)
    assert sum(split) == 10 and split[0] == max(split) and len(set(split[1:])) == 1


def test_exponential_partition_paper_example():
    assert split_channels_exponential(32, 4) == [16, 8, 4, 4]  # MixConv paper, section 3.2


@pytest.mark.parametrize("channels,groups", [(33, 4), (120, 3), (64, 5)])
def test_exponential_partition_halves_and_sums(channels, groups):
    split = split_channels_exponential(channels, groups)
    assert sum(split) == channels
    for i, size in enumerate(split[:-1]):
        assert abs(size - channels / 2 ** (i + 1)) < 1


def test_exponential_partition_too_many_groups_is_an_error():
    with pytest.raises(ValueError, match="empty group"):
        split_channels_exponential(4, 4)


def test_exponential_module_uses_the_partition():
    conv = MixConv2d(32, kernel_sizes=[3, 5, 7, 9], partition="exponential")
    assert [c.in_channels for c in conv.values()] == [16, 8, 4, 4]
    assert conv(torch.randn(1, 32, 9, 9)).shape == (1, 32, 9, 9)


def test_int_kernel_sizes_mean_paper_default_kernels():
    conv = MixConv2d(12, kernel_sizes=3)
    assert [c.kernel_size[0] for c in conv.values()] == [3, 5, 7]


# ---------------------------------------------------------------- g = 1 and keys

def test_single_kernel_is_a_plain_depthwise_conv_with_same_output():
    ours = create_conv2d(16, 16, [5], depthwise=True)
    assert isinstance(ours, nn.Conv2d) and list(ours.state_dict()) == ["weight"]
    reference = nn.Conv2d(16, 16, 5, padding=2, groups=16, bias=False)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(2, 16, 11, 11)
    torch.testing.assert_close(ours(x), reference(x), rtol=0, atol=0)


def test_one_group_mixconv_equals_depthwise_conv():
    ours = MixConv2d(8, kernel_sizes=[3])
    reference = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    reference.weight.data.copy_(ours["0"].weight)
    x = torch.randn(1, 8, 10, 10)
    torch.testing.assert_close(ours(x), reference(x))


@pytest.mark.parametrize("padding,timm_padding", [("symmetric", ""), ("same", "same")])
@pytest.mark.parametrize("stride", [1, 2])
def test_state_dict_and_output_match_timm_mixed_conv(padding, timm_padding, stride):
    ours = MixConv2d(30, kernel_sizes=[3, 5, 7], stride=stride, padding=padding)
    theirs = MixedConv2d(30, 30, [3, 5, 7], stride=stride, padding=timm_padding, depthwise=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict())[:2] == ["0.weight", "1.weight"]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    for size in (15, 16):  # odd and even inputs: TF 'same' pads differently
        x = torch.randn(2, 30, size, size)
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-6)


def test_grouped_pointwise_matches_timm():
    ours = create_conv2d(24, 48, [1, 1])
    theirs = MixedConv2d(24, 48, [1, 1])
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 24, 5, 5)
    torch.testing.assert_close(ours(x), theirs(x))


# ---------------------------------------------------------------- shapes, stride, padding

@pytest.mark.parametrize("padding", ["symmetric", "same"])
@pytest.mark.parametrize("size,expected", [(16, 8), (15, 8), (7, 4)])
def test_stride2_output_shape(padding, size, expected):
    conv = MixConv2d(12, kernel_sizes=[3, 5, 7, 9], stride=2, padding=padding)
    assert conv(torch.randn(1, 12, size, size)).shape == (1, 12, expected, expected)


def test_same_padding_is_asymmetric_at_stride2_like_tensorflow():
    # TF 'SAME' on an even input at stride 2 with a 3x3 pads 0 top/left and 1 bottom/right:
    # the reference is an explicit pad followed by an unpadded conv.
    conv = MixConv2d(4, kernel_sizes=[3, 5], stride=2, padding="same")
    x = torch.randn(1, 4, 8, 8)
    parts = torch.split(x, conv.splits, 1)
    expected = torch.cat([
        F.conv2d(F.pad(parts[0], (0, 1, 0, 1)), conv["0"].weight, stride=2, groups=2),
        F.conv2d(F.pad(parts[1], (1, 2, 1, 2)), conv["1"].weight, stride=2, groups=2),
    ], 1)
    torch.testing.assert_close(conv(x), expected)


def test_channel_multiplier():
    conv = MixConv2d(6, 12, kernel_sizes=[3, 5])
    assert [(c.in_channels, c.out_channels, c.groups) for c in conv.values()] == [(3, 6, 3), (3, 6, 3)]
    x = torch.randn(1, 6, 7, 7)
    out = conv(x)
    assert out.shape == (1, 12, 7, 7)
    expected = F.conv2d(x[:, 3:], conv["1"].weight, padding=2, groups=3)
    torch.testing.assert_close(out[:, 6:], expected)


# ---------------------------------------------------------------- dilated variant

def _impulse_support(conv: nn.Module, channels: int, size: int = 21) -> list[np.ndarray]:
    """Per group: the columns where the response to a centred impulse is non-zero."""
    for c in conv.values():
        nn.init.ones_(c.weight)
    x = torch.zeros(1, channels, size, size)
    x[..., size // 2, size // 2] = 1
    with torch.no_grad():
        y = conv(x)
    out, start = [], 0
    for c in conv.values():
        row = y[0, start, size // 2]
        out.append(np.nonzero(row.numpy())[0] - size // 2)
        start += c.out_channels
    return out


def test_dilated_variant_keeps_receptive_field_with_3_taps():
    dense = _impulse_support(MixConv2d(9, kernel_sizes=[3, 5, 7]), 9)
    dilated = _impulse_support(MixConv2d(9, kernel_sizes=[3, 5, 7], dilated=True), 9)
    for k, d, s in zip([3, 5, 7], dense, dilated):
        assert list(d) == list(range(-(k // 2), k // 2 + 1))           # dense: k taps
        assert list(s) == [-(k // 2), 0, k // 2]                        # dilated: 3 taps, same extent
    conv = MixConv2d(9, kernel_sizes=[3, 5, 7], dilated=True)
    assert [c.kernel_size[0] for c in conv.values()] == [3, 3, 3]
    assert [c.dilation[0] for c in conv.values()] == [1, 2, 3]


def test_dilated_variant_refuses_stride2():
    with pytest.raises(ValueError, match="stride 1"):
        MixConv2d(8, kernel_sizes=[3, 5], stride=2, dilated=True)


# ---------------------------------------------------------------- ONNX

@pytest.mark.parametrize("padding", ["symmetric", "same"])
def test_onnx_export_is_split_conv_concat_and_matches_onnxruntime(padding):
    conv = MixConv2d(12, kernel_sizes=[3, 5, 7], stride=2, padding=padding).eval()
    x = torch.randn(1, 12, 16, 16)
    model = torch.onnx.export(conv, (x,), opset_version=18, dynamo=True, verbose=False).model_proto
    ops = [n.op_type for n in model.graph.node if n.op_type not in ("Constant", "Identity")]
    # At a static input size the exporter folds TF 'same' padding into the Conv pads.
    assert ops == ["Split", "Conv", "Conv", "Conv", "Concat"]
    _assert_onnxruntime_matches(model.SerializeToString(), conv, x)


@pytest.mark.parametrize("size", [16, 17])
def test_torchscript_export_of_same_padding_matches_onnxruntime(size):
    """The TorchScript exporter traces the run-time padding arithmetic (sizes become tensors,
    ONNX integer Div truncates): odd and even sizes must both come out right."""
    conv = MixConv2d(12, kernel_sizes=[3, 5, 7], stride=2, padding="same").eval()
    x = torch.randn(1, 12, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(conv, (x,), buf, opset_version=17, dynamo=False)
    ops = [n.op_type for n in onnx.load_from_string(buf.getvalue()).graph.node]
    assert ops.count("Conv") == 3 and ops.count("Pad") == 3 and "Split" in ops
    _assert_onnxruntime_matches(buf.getvalue(), conv, x)


def _assert_onnxruntime_matches(model_bytes: bytes, module: nn.Module, x: torch.Tensor):
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    expected = module(x).detach().numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- replacing depthwise convs

class TinyMobileNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, 1, 1, groups=16), nn.Conv2d(16, 32, 1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, 2, 1, groups=32), nn.Conv2d(64, 24, 1),  # depthwise x2 multiplier
        )

    def forward(self, x):
        return self.features(x)


def test_replace_depthwise_with_mixconv_on_small_model():
    model = TinyMobileNet()
    x = torch.randn(1, 3, 32, 32)
    shape = model(x).shape
    replaced = replace_depthwise_with_mixconv(model, [3, 5, 7])
    assert replaced == ["features.2", "features.5"]
    assert isinstance(model.features[2], MixConv2d) and isinstance(model.features[5], MixConv2d)
    assert model.features[5]["0"].stride == (2, 2)
    assert model.features[5].out_channels == 64
    assert isinstance(model.features[0], nn.Conv2d) and isinstance(model.features[3], nn.Conv2d)
    assert model(x).shape == shape


def test_replace_depthwise_in_torchvision_mobilenet_v2():
    import torchvision  # importable after timm_oracle patched the nms registration

    model = torchvision.models.mobilenet_v2(weights=None).eval()
    depthwise = [n for n, m in model.named_modules()
                 if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]
    replaced = replace_depthwise_with_mixconv(model, 3)
    assert replaced == depthwise and len(replaced) == 17
    for name in depthwise:
        assert isinstance(model.get_submodule(name), MixConv2d)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
