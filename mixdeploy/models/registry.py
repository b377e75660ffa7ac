"""Model names -> constructors and default preprocessing.

Our own MixNets are always available.  `timm:<name>` builds any timm model, imported
lazily: timm is an optional extra (it pulls torchvision), never needed for MixNets.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from torch import nn

from mixdeploy.errors import MixdeployError
from mixdeploy.models.mixconv import is_depthwise_conv
from mixdeploy.models.mixnet import MIXNET_CONFIGS, create_mixnet
from mixdeploy.preprocess import Preprocessing

TIMM_PREFIX = "timm:"

# timm's pretrained_cfg for every MixNet: 224 px, crop_pct 0.875, bicubic, ImageNet mean/std.
MIXNET_PREPROCESSING = Preprocessing(input_size=224, crop_pct=0.875, interpolation="bicubic")

# The timm model each of ours is weight-compatible with (for docs, tests and `models` output).
TIMM_EQUIVALENT = {name: name.replace("-", "_") for name in MIXNET_CONFIGS}


@dataclass(frozen=True)
class ModelInfo:
    name: str
    timm_name: str
    preprocessing: Preprocessing
    description: str


def _describe(name: str) -> str:
    cfg = MIXNET_CONFIGS[name]
    size = name[-1].upper()
    flavour = "TF 'same' padding, BN eps 1e-3 (for TF-trained checkpoints)" if cfg.tf_compatible \
        else "PyTorch symmetric padding"
    return f"MixNet-{size}, width x{cfg.channel_multiplier:g}, {flavour}"


REGISTRY: dict[str, ModelInfo] = {
    name: ModelInfo(name, TIMM_EQUIVALENT[name], MIXNET_PREPROCESSING, _describe(name))
    for name in MIXNET_CONFIGS
}


def list_models() -> list[str]:
    return list(REGISTRY)


def canonical_name(name: str) -> str:
    """'MixNet_S' / 'mixnet_s' / 'mixnet-s' -> 'mixnet-s'; 'timm:x' is kept as is."""
    if name.startswith(TIMM_PREFIX):
        return name
    key = name.strip().lower().replace("_", "-")
    if key not in REGISTRY:
        raise MixdeployError(
            f"unknown model {name!r}. Known models: {', '.join(REGISTRY)}; "
            f"or 'timm:<name>' for a timm model (needs timm installed).")
    return key


def default_preprocessing(name: str) -> Preprocessing:
    name = canonical_name(name)
    if name.startswith(TIMM_PREFIX):
        return timm_preprocessing(name[len(TIMM_PREFIX):])
    return REGISTRY[name].preprocessing


def create_model(name: str, num_classes: int = 1000) -> nn.Module:
    """A freshly initialised model (train mode, like any nn.Module constructor)."""
    name = canonical_name(name)
    if name.startswith(TIMM_PREFIX):
        return create_timm_model(name[len(TIMM_PREFIX):], num_classes)
    return create_mixnet(name, num_classes=num_classes)


# ---------------------------------------------------------------- timm (optional)

def import_timm():
    """Import timm, turning its known install problems into instructions."""
    try:
        import timm
    except ImportError as err:
        raise MixdeployError(
            f"'timm:' models need timm, which is not installed ({err}). Install it with "
            f"`pip install -c scripts/test-constraints.txt timm` (the constraints pin torchvision "
            f"to the CPU torch wheel).") from err
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        raise MixdeployError(
            f"timm models need a working torchvision, and torchvision {_version('torchvision')} does not "
            f"load against this CPU build of torch {_version('torch')} ('operator torchvision::nms does "
            f"not exist': its compiled ops were built for a different torch). Install timm with the "
            f"project's pins, `pip install -c scripts/test-constraints.txt timm`; if the error stays, it is "
            f"the known torchvision/CPU-torch mismatch: install the CPU build of the pinned torchvision "
            f"(`pip install -c scripts/test-constraints.txt torchvision --index-url "
            f"https://download.pytorch.org/whl/cpu`). Our own MixNets ({', '.join(REGISTRY)}) need no timm.") from err
    return timm


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "(not installed)"


def create_timm_model(timm_name: str, num_classes: int = 1000) -> nn.Module:
    timm = import_timm()
    if not timm.is_model(timm_name):
        close = timm.list_models(f"*{timm_name.split('.')[0]}*")[:10]
        raise MixdeployError(f"timm has no model {timm_name!r}"
                             + (f"; similar: {', '.join(close)}" if close else "") + ".")
    # pretrained=False always: nothing is downloaded; pass --weights for a checkpoint.
    return timm.create_model(timm_name, pretrained=False, num_classes=num_classes)


def timm_preprocessing(timm_name: str) -> Preprocessing:
    timm = import_timm()
    cfg = timm.models.get_pretrained_cfg(timm_name)
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    size = cfg.get("input_size", (3, 224, 224))[-1]
    return Preprocessing(input_size=int(size), crop_pct=float(cfg.get("crop_pct", 0.875)),
                         interpolation=cfg.get("interpolation", "bicubic"),
                         mean=tuple(cfg.get("mean", MIXNET_PREPROCESSING.mean)),
                         std=tuple(cfg.get("std", MIXNET_PREPROCESSING.std)))


# ---------------------------------------------------------------- model facts

def kernel_mix(module: nn.Module) -> dict[int, int]:
    """Histogram of depthwise kernel sizes: kernel -> number of depthwise channels using it.

    Counting channels (not convs) shows how much of the network each kernel size covers;
    a MixConv contributes each of its groups.
    """
    hist: Counter[int] = Counter()
    for m in module.modules():
        if is_depthwise_conv(m):  # a MixConv2d's groups are visited as plain depthwise convs
            effective = m.dilation[0] * (m.kernel_size[0] - 1) + 1
            hist[effective] += m.in_channels
    return dict(sorted(hist.items()))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
