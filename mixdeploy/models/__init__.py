"""The model zoo: MixConv2d, MixNet-S/M/L (timm weight-compatible), a registry and load_model."""

from mixdeploy.models.mixconv import (MixConv2d, create_conv2d, replace_depthwise_with_mixconv,
                                      split_channels, split_channels_equal, split_channels_exponential)
from mixdeploy.models.mixnet import MIXNET_CONFIGS, MixNet, create_mixnet
from mixdeploy.models.registry import (REGISTRY, canonical_name, count_params, create_model,
                                       default_preprocessing, kernel_mix, list_models)
from mixdeploy.models.sources import LoadedModel, load_model, read_checkpoint, save_checkpoint

__all__ = [
    "MixConv2d", "create_conv2d", "replace_depthwise_with_mixconv", "split_channels",
    "split_channels_equal", "split_channels_exponential", "MIXNET_CONFIGS", "MixNet", "create_mixnet",
    "REGISTRY", "canonical_name", "count_params", "create_model", "default_preprocessing", "kernel_mix",
    "list_models", "LoadedModel", "load_model", "read_checkpoint", "save_checkpoint",
]
