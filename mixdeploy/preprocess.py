"""Preprocessing: one object that travels with the model.

Parity, calibration and on-device runs all feed tensors made by the same
`Preprocessing`, and it is written into manifest.json so nothing is guessed later.
Tensors produced here are NCHW float32 (PyTorch/ONNX layout); the TFLite side
transposes to NHWC itself.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    input_size: int = 224           # square side fed to the network
    crop_pct: float = 0.875         # resize shorter side to input_size / crop_pct, then center-crop
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channel_order: str = "RGB"      # grey images are replicated to 3 channels
    layout: str = "NCHW"            # layout of the tensors this object produces

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**kw)

    def with_size(self, input_size: int) -> "Preprocessing":
        return dataclasses.replace(self, input_size=int(input_size))

    def normalize(self, images01: np.ndarray) -> np.ndarray:
        """images01: N,3,H,W float in [0,1] -> normalized float32 NCHW."""
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((images01.astype(np.float32) - mean) / std).astype(np.float32)
