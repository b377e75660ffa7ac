"""Preprocessing: one object that travels with the model.

Parity, calibration and on-device runs all feed tensors made by the same
`Preprocessing`, and it is written into manifest.json so nothing is guessed later.
Tensors produced here are NCHW float32 (PyTorch/ONNX layout); the TFLite side
transposes to NHWC itself.

Where it comes from, strongest first: the user's flags (named as timm's validate.py names
them: --input-size, --crop-pct, --interpolation, --mean, --std), a config file the user names
(--preprocess: a timm / Hugging Face config.json, a transformers preprocessor_config.json or a
mixdeploy manifest.json), the checkpoint's own metadata, and last the model's default (timm's
ImageNet pretrained_cfg). `resolve_preprocessing` applies that order once and records, per
field, where its value came from, so the CLI can say what it used and warn about guesses.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixdeploy.errors import MixdeployError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION_NAMES = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
# PIL's resampling codes, as transformers' preprocessor_config.json writes them ("resample": 3).
PIL_RESAMPLE_CODES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
FIELDS = ("input_size", "crop_pct", "interpolation", "mean", "std")


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

    def describe(self) -> str:
        return (f"{self.input_size} px, {self.interpolation}, crop_pct {self.crop_pct:g}, "
                f"mean {_numbers(self.mean)}, std {_numbers(self.std)}")

    def normalize(self, images01: np.ndarray) -> np.ndarray:
        """images01: N,3,H,W float in [0,1] -> normalized float32 NCHW."""
        mean = np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return ((images01.astype(np.float32) - mean) / std).astype(np.float32)


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)


# ---------------------------------------------------------------- what the user says


@dataclass(frozen=True)
class PreprocessingOverrides:
    """What the user asked for on the command line (None: not given)."""

    input_size: int | None = None
    crop_pct: float | None = None
    interpolation: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    config: Path | None = None           # --preprocess FILE

    def flags(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}

    def __bool__(self) -> bool:
        return bool(self.flags()) or self.config is not None


@dataclass(frozen=True)
class ResolvedPreprocessing:
    preprocessing: Preprocessing
    sources: dict[str, str] = field(default_factory=dict)   # field -> "flag" / "config FILE" / base source

    def guessed_fields(self, default_source: str) -> list[str]:
        return [name for name in FIELDS if self.sources.get(name) == default_source]

    def to_dict(self) -> dict:
        return {**self.preprocessing.to_dict(), "sources": dict(self.sources)}


def resolve_preprocessing(base: Preprocessing, base_source: str,
                          overrides: PreprocessingOverrides | None = None) -> ResolvedPreprocessing:
    """`base` (from `base_source`), then the config file, then the flags, each field on its own."""
    overrides = overrides or PreprocessingOverrides()
    values = {name: getattr(base, name) for name in FIELDS}
    sources = {name: base_source for name in FIELDS}
    if overrides.config is not None:
        for name, value in read_preprocess_config(overrides.config).items():
            values[name], sources[name] = value, f"config {overrides.config}"
    for name, value in overrides.flags().items():
        values[name], sources[name] = value, "flag"
    checked = check_fields(values)
    return ResolvedPreprocessing(dataclasses.replace(base, **checked), sources)


def check_fields(values: dict) -> dict:
    """Validate preprocessing fields (wherever they came from); mean/std of one value mean grey->RGB."""
    out = dict(values)
    size = out["input_size"]
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 16:
        raise MixdeployError(f"input size must be a whole number of pixels >= 16, got {size!r}")
    out["input_size"] = int(size)
    crop = out["crop_pct"]
    if not isinstance(crop, (int, float)) or not (0 < float(crop) <= 1.0) or not math.isfinite(float(crop)):
        raise MixdeployError(f"crop_pct must be in (0, 1] (1.0: no crop; timm's ImageNet default 0.875), got {crop!r}")
    out["crop_pct"] = float(crop)
    if out["interpolation"] not in INTERPOLATION_NAMES:
        raise MixdeployError(f"unknown interpolation {out['interpolation']!r}; use one of {', '.join(INTERPOLATION_NAMES)}")
    for name in ("mean", "std"):
        out[name] = _three_channels(name, out[name])
    if min(out["std"]) <= 0:
        raise MixdeployError(f"std must be positive for every channel, got {_numbers(out['std'])}")
    return out


def _three_channels(name: str, value) -> tuple[float, float, float]:
    try:
        numbers = tuple(float(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    except (TypeError, ValueError):
        raise MixdeployError(f"{name} must be numbers, got {value!r}") from None
    if len(numbers) == 1:
        numbers = numbers * 3
    if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers):
        raise MixdeployError(f"{name} needs 1 or 3 finite values (R,G,B), got {value!r}")
    return numbers


def parse_channel_values(text: str, name: str = "value") -> tuple[float, ...]:
    """'0.485,0.456,0.406' or '0.485 0.456 0.406' or 'imagenet' / 'inception' (timm's named sets)."""
    named = {"imagenet": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD},
             "inception": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}}
    key = text.strip().lower()
    if key in named:
        return named[key].get(name.lstrip("-"), named[key]["mean"])
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        return _three_channels(name, [float(p) for p in parts])
    except ValueError:
        raise MixdeployError(f"{name} must be 1 or 3 numbers like 0.485,0.456,0.406 (or 'imagenet'), got {text!r}") from None


# ---------------------------------------------------------------- config files


def read_preprocess_config(path: str | Path) -> dict:
    """The preprocessing fields a config file sets.

    Understood: timm's config.json (`pretrained_cfg` block, or a data config at the top level:
    input_size [C,H,W], interpolation, mean, std, crop_pct, crop_mode), a transformers
    preprocessor_config.json (image_mean, image_std, resample, size, crop_size, do_center_crop),
    and a mixdeploy manifest.json (its `preprocessing` block).
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MixdeployError(f"preprocessing config not found: {path}") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MixdeployError(f"cannot read {path} as a JSON config ({err}); give a timm/Hugging Face "
                             "config.json or a mixdeploy manifest.json") from None
    if not isinstance(document, dict):
        raise MixdeployError(f"{path} holds a JSON {type(document).__name__}, not an object with preprocessing keys")
    if isinstance(document.get("preprocessing"), dict):          # mixdeploy manifest / checkpoint metadata
        block = document["preprocessing"]
        return {name: block[name] for name in FIELDS if name in block}
    if isinstance(document.get("pretrained_cfg"), dict):         # timm / HF hub config.json
        return _from_timm(document["pretrained_cfg"], path)
    if "image_mean" in document or "image_processor_type" in document:   # transformers
        return _from_transformers(document, path)
    if any(key in document for key in ("input_size", "crop_pct", "interpolation", "mean", "std")):
        return _from_timm(document, path)
    raise MixdeployError(f"{path} names no preprocessing (no pretrained_cfg, input_size, mean/std, image_mean ...); "
                         "give timm's config.json, a preprocessor_config.json or a mixdeploy manifest.json")


def _from_timm(cfg: dict, path: Path) -> dict:
    out = {}
    if "input_size" in cfg:
        size = cfg["input_size"]
        dims = list(size) if isinstance(size, (list, tuple)) else [size]
        if len(dims) == 3:
            dims = dims[1:]
        if len(dims) == 2 and dims[0] != dims[1]:
            raise MixdeployError(f"{path}: input_size {size} is not square; mixdeploy exports square inputs")
        out["input_size"] = dims[-1]
    if cfg.get("crop_mode", "center") not in ("center", None):
        raise MixdeployError(f"{path}: crop_mode {cfg['crop_mode']!r} is not supported (only 'center'); "
                             "pass --crop-pct 1.0 if the images were resized without a crop")
    for name in ("crop_pct", "interpolation", "mean", "std"):
        if cfg.get(name) is not None:
            out[name] = cfg[name]
    return out


def _from_transformers(cfg: dict, path: Path) -> dict:
    out = {}
    if "image_mean" in cfg:
        out["mean"] = cfg["image_mean"]
    if "image_std" in cfg:
        out["std"] = cfg["image_std"]
    if "resample" in cfg:
        if cfg["resample"] not in PIL_RESAMPLE_CODES:
            raise MixdeployError(f"{path}: unknown resample code {cfg['resample']!r}")
        out["interpolation"] = PIL_RESAMPLE_CODES[cfg["resample"]]
    resize = _side(cfg.get("size"), path)
    crop = _side(cfg.get("crop_size"), path) if cfg.get("do_center_crop", "crop_size" in cfg) else None
    if crop is not None:
        out["input_size"] = crop
        out["crop_pct"] = min(1.0, crop / resize) if resize else 1.0
    elif resize is not None:
        out["input_size"], out["crop_pct"] = resize, 1.0
    return out


def _side(size, path: Path) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    if isinstance(size, dict):
        if "shortest_edge" in size:
            return int(size["shortest_edge"])
        if "height" in size and "width" in size:
            if size["height"] != size["width"]:
                raise MixdeployError(f"{path}: size {size} is not square; mixdeploy exports square inputs")
            return int(size["height"])
    raise MixdeployError(f"{path}: cannot read the image size {size!r}")
