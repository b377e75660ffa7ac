"""Our MixNets against timm's (the independent reference): keys, shapes, params and logits."""

import numpy as np
import pytest
import torch
from skimage import data
from timm_oracle import timm
from torch import nn

from mixdeploy.models import create_model, load_model
from mixdeploy.models.registry import TIMM_EQUIVALENT
from mixdeploy.preprocess import Preprocessing
from model_support import randomize_batchnorm

PAIRS = sorted(TIMM_EQUIVALENT.items())  # ("mixnet-s", "mixnet_s"), ...


def real_image(size: int) -> torch.Tensor:
    """skimage's astronaut, resized and normalised like the models' preprocessing."""
    img = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    img = torch.nn.functional.interpolate(img, size=(size, size), mode="bicubic", align_corners=False)
    return torch.from_numpy(Preprocessing().normalize(img.clamp(0, 1).numpy()))


def timm_pair(ours_name, timm_name, num_classes, calibration=None):
    theirs = timm.create_model(timm_name, num_classes=num_classes)
    if calibration is not None:
        randomize_batchnorm(theirs, calibration)
    ours = create_model(ours_name, num_classes=num_classes).eval()
    return ours, theirs.eval()


@pytest.mark.parametrize("ours_name,timm_name", PAIRS)
def test_state_dict_keys_and_shapes_equal_timm(ours_name, timm_name):
    ours, theirs = timm_pair(ours_name, timm_name, 37)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("ours_name,timm_name", [("mixnet-s", "mixnet_s"), ("mixnet-m", "mixnet_m"),
                                                 ("mixnet-l", "mixnet_l")])
def test_params_equal_timm_at_1000_classes(ours_name, timm_name):
    theirs = timm.create_model(timm_name)
    ours = load_model(ours_name)
    assert ours.params == sum(p.numel() for p in theirs.parameters())
    assert ours.num_classes == 1000


@pytest.mark.parametrize("ours_name,timm_name", PAIRS)
@pytest.mark.parametrize("num_classes", [10])
def test_logits_equal_timm_with_timm_weights(ours_name, timm_name, num_classes):
    torch.manual_seed(1)
    inputs = [torch.cat([torch.randn(1, 3, 96, 96), real_image(96)])]
    if ours_name.startswith("tf-"):  # TF 'same' pads odd and even inputs differently: try both
        inputs.append(torch.randn(1, 3, 57, 57))
    ours, theirs = timm_pair(ours_name, timm_name, num_classes, calibration=inputs[0])
    ours.load_state_dict(theirs.state_dict(), strict=True)
    with torch.no_grad():
        for x in inputs:
            expected = theirs(x)
            got = ours(x)
            assert 0.5 < expected.abs().max() < 1e3  # logits of a sane size: the comparison means something
            assert (got - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize("ours_name,timm_name", [("mixnet-s", "mixnet_s"), ("tf-mixnet-l", "tf_mixnet_l")])
def test_weights_load_into_timm_and_agree_at_224(ours_name, timm_name):
    """The other direction: our state dict into timm, real photo at full resolution."""
    x = real_image(224)
    ours = randomize_batchnorm(create_model(ours_name, num_classes=1000), x, seed=3)
    theirs = timm.create_model(timm_name, num_classes=1000).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert 0.5 < expected.abs().max() < 1e3
    assert (got - expected).abs().max().item() < 1e-4
    assert got.argmax().item() == expected.argmax().item()


def test_tf_variant_uses_tf_batchnorm_eps_and_differs_from_pytorch_variant():
    tf_model, pt_model = create_model("tf-mixnet-s"), create_model("mixnet-s")
    assert {m.eps for m in tf_model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    assert {m.eps for m in pt_model.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-5}
    # same weights, different padding/eps -> different logits at stride-2 layers
    x = torch.randn(1, 3, 64, 64)
    pt_model.load_state_dict(randomize_batchnorm(tf_model, x).state_dict())
    with torch.no_grad():
        assert not np.allclose(tf_model.eval()(x).numpy(), pt_model.eval()(x).numpy(), atol=1e-4)
