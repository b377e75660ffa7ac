"""load_model: a model name (+ optional checkpoint) -> an eval-mode module with its facts.

Checkpoints accepted (read with torch.load(weights_only=True): no pickled code runs):
  * a bare state dict (what `torch.save(model.state_dict())` and timm's released .pth are);
  * a training checkpoint holding one under `state_dict_ema`, `model_ema`, `state_dict` or
    `model` (EMA first: timm's released ImageNet weights are the EMA ones);
  * a `.safetensors` file (timm's Hugging Face hub format), when safetensors is installed;
  * a mixdeploy checkpoint (`save_checkpoint`): {"state_dict": ..., "mixdeploy": {"model",
    "num_classes", "preprocessing"}} — the metadata names the model, so the file alone is a source.
A `module.` prefix (DataParallel / DDP) is stripped; weights are cast to float32 (fp16 files load).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixdeploy.atomic import atomic_path
from mixdeploy.errors import MixdeployError
from mixdeploy.models.registry import (REGISTRY, TIMM_PREFIX, canonical_name, count_params, create_model,
                                       default_preprocessing, kernel_mix)
from mixdeploy.preprocess import (Preprocessing, PreprocessingOverrides, ResolvedPreprocessing,
                                  resolve_preprocessing)

STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
METADATA_KEY = "mixdeploy"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".safetensors")
CLASSIFIER_KEYS = ("classifier.weight", "head.fc.weight", "fc.weight", "head.weight", "last_linear.weight")
MAX_KEYS_SHOWN = 10
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # checkpoints shipped with the package


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    sha256: str
    path: str


@dataclass
class LoadedModel:
    module: nn.Module                    # eval mode
    name: str                            # canonical registry name or 'timm:<name>'
    source: str                          # what the user passed
    num_classes: int
    preprocessing: Preprocessing
    weights_sha256: str | None = None    # None: random init (no checkpoint)
    weights_path: str | None = None
    params: int = 0
    kernel_mix: dict[int, int] = field(default_factory=dict)
    class_names: list[str] | None = None  # from checkpoint metadata, when it has them
    metadata: dict = field(default_factory=dict)  # the checkpoint's whole "mixdeploy" block
    # where each preprocessing field came from (flag / config / checkpoint / default)
    preprocessing_sources: dict[str, str] = field(default_factory=dict)

    def preprocessing_guesses(self) -> list[str]:
        """Fields taken from the model's ImageNet default although a checkpoint was loaded: its
        training preprocessing is unknown there, so calibration and parity may be off."""
        if self.weights_path is None:
            return []
        return [name for name, source in self.preprocessing_sources.items() if source.startswith(DEFAULT_SOURCE)]

    def to_manifest(self) -> dict:
        return {"model": self.name, "source": self.source, "num_classes": self.num_classes,
                "params": self.params, "weights_path": self.weights_path,
                "weights_sha256": self.weights_sha256, "kernel_mix": self.kernel_mix,
                "class_names": self.class_names,
                "preprocessing": self.preprocessing.to_dict()}


DEFAULT_SOURCE = "default"


def load_model(source: str, weights: str | os.PathLike | None = None, num_classes: int | None = None,
               input_size: int | None = None,
               preprocessing: PreprocessingOverrides | None = None) -> LoadedModel:
    """Build `source` and load `weights` into it; returns the module in eval mode with its facts.

    source: a registry name ('mixnet-s', 'tf_mixnet_l', ...), 'timm:<name>', a mixdeploy
        checkpoint file (its metadata names the model), or the name of a checkpoint shipped in
        mixdeploy/weights/ (e.g. 'mixnet-s-fashion-mnist').

    num_classes: explicit value > checkpoint metadata > classifier shape in the weights > 1000.
    input_size: shorthand for preprocessing=PreprocessingOverrides(input_size=...) (MixNets are
        fully convolutional).
    preprocessing: what the user said (flags, a config file); it wins over the checkpoint's
        metadata, which wins over the model's default.
    """
    source_is_checkpoint = weights is None and checkpoint_named_by(source) is not None
    if source_is_checkpoint:
        weights = checkpoint_named_by(source)
    checkpoint = read_checkpoint(weights) if weights is not None else None
    meta = checkpoint.metadata if checkpoint else {}
    name = _resolve_name(source, weights, meta, source_is_checkpoint)

    if num_classes is None:
        num_classes = meta.get("num_classes") or (infer_num_classes(checkpoint.state_dict) if checkpoint else None) or 1000
    module = create_model(name, num_classes=int(num_classes))
    if checkpoint is not None:
        apply_state_dict(module, checkpoint.state_dict, what=f"{checkpoint.path} into {name}")
    module.eval()

    resolved = _resolve_preprocessing(name, meta, checkpoint, preprocessing, input_size)
    return LoadedModel(module=module, name=name, source=str(source), num_classes=int(num_classes),
                       preprocessing=resolved.preprocessing, preprocessing_sources=resolved.sources,
                       weights_sha256=checkpoint.sha256 if checkpoint else None,
                       weights_path=checkpoint.path if checkpoint else None,
                       params=count_params(module), kernel_mix=kernel_mix(module),
                       class_names=list(meta["class_names"]) if meta.get("class_names") else None,
                       metadata=dict(meta))


def _resolve_preprocessing(name: str, meta: dict, checkpoint, overrides, input_size) -> ResolvedPreprocessing:
    if input_size is not None:
        overrides = dataclasses.replace(overrides or PreprocessingOverrides(), input_size=int(input_size))
    if meta.get("preprocessing"):
        base, base_source = Preprocessing.from_dict(meta["preprocessing"]), f"checkpoint {Path(checkpoint.path).name}"
    else:
        base, base_source = default_preprocessing(name), f"{DEFAULT_SOURCE} ({name})"
    return resolve_preprocessing(base, base_source, overrides)


def bundled_checkpoints() -> dict[str, Path]:
    """Checkpoints shipped in mixdeploy/weights/, by name ('mixnet-s-fashion-mnist' for
    mixnet_s_fashion_mnist.pt); each carries metadata naming its model."""
    return {p.stem.lower().replace("_", "-"): p for p in sorted(WEIGHTS_DIR.glob("*.pt"))}


def checkpoint_named_by(source: str) -> Path | None:
    """The checkpoint file a source names (a path or a bundled name), or None for a model name."""
    source = str(source)
    if source.startswith(TIMM_PREFIX) or source.strip().lower().replace("_", "-") in REGISTRY:
        return None  # a model name wins over a same-named file in the working directory
    bundled = bundled_checkpoints().get(source.strip().lower().replace("_", "-"))
    if bundled is not None:
        return bundled
    if source.lower().endswith(CHECKPOINT_SUFFIXES) or os.sep in source or Path(source).is_file():
        return Path(source)
    return None


def _resolve_name(source: str, weights, meta: dict, source_is_checkpoint: bool) -> str:
    meta_name = meta.get("model")
    if source_is_checkpoint:
        if not meta_name:
            raise MixdeployError(
                f"{weights} carries no mixdeploy metadata naming its model; pass the model name and the "
                f"file separately, e.g. `mixnet-s --weights {weights}` (load_model('mixnet-s', weights=...)).")
        return canonical_name(meta_name)
    name = canonical_name(source)
    if meta_name and canonical_name(meta_name) != name:
        raise MixdeployError(f"{weights} was saved from {meta_name!r}, not {name!r}; load it as {meta_name!r} "
                             f"(or pass its file alone as the source).")
    return name


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise MixdeployError(f"weights file not found: {path}. Check the path (it is relative to {Path.cwd()}).")
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    raw = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    state_dict, metadata = _unwrap(raw, path)
    return Checkpoint(state_dict=state_dict, metadata=metadata, sha256=sha256, path=str(path))


def _read_torch(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a truncated/foreign file
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise MixdeployError(
            f"cannot read {path} as a PyTorch checkpoint ({reason}). The file is corrupt, truncated or "
            f"not a torch.save() file; re-download or re-save it. Only tensors/dicts load "
            f"(weights_only=True): re-save pickled objects with torch.save(model.state_dict(), path).") from err


def _read_safetensors(path: Path):
    try:
        from safetensors.torch import load_file
    except ImportError as err:
        raise MixdeployError(f"{path} is a safetensors file; install `safetensors` to read it.") from err
    try:
        return load_file(str(path))
    except Exception as err:
        raise MixdeployError(f"cannot read {path} as safetensors ({err}); the file is corrupt or truncated.") from err


def _unwrap(raw, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not isinstance(raw, dict):
        raise MixdeployError(f"{path} holds a {type(raw).__name__}, not a state dict; save model.state_dict().")
    metadata = raw.get(METADATA_KEY) if isinstance(raw.get(METADATA_KEY), dict) else {}
    state_dict = raw
    for key in STATE_DICT_KEYS:
        if isinstance(raw.get(key), dict):
            state_dict = raw[key]
            break
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise MixdeployError(f"{path} holds no tensors (top-level keys: {', '.join(list(map(str, raw))[:10])}); "
                             f"expected a state dict or a checkpoint with one under {', '.join(STATE_DICT_KEYS)}.")
    return {_strip_prefix(k): _to_float32(v) for k, v in tensors.items()}, metadata


def _strip_prefix(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _to_float32(t: torch.Tensor) -> torch.Tensor:
    # fp16/bf16 checkpoints (half the size in git) run in float32 everywhere downstream.
    return t.float() if t.is_floating_point() else t


def infer_num_classes(state_dict: dict[str, torch.Tensor]) -> int | None:
    for key in CLASSIFIER_KEYS:
        if key in state_dict and state_dict[key].ndim == 2:
            return int(state_dict[key].shape[0])
    return None


def apply_state_dict(module: nn.Module, state_dict: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True), after checking keys and shapes so the error names them."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch (file vs model)", wrong_shape)):
            if items:
                shown = ", ".join(items[:MAX_KEYS_SHOWN]) + (", ..." if len(items) > MAX_KEYS_SHOWN else "")
                parts.append(f"{len(items)} {label}: {shown}")
        raise MixdeployError(
            f"weights do not fit when loading {what} ({len(state_dict)} tensors in file, {len(expected)} in model): "
            + "; ".join(parts) + ". Check the model name matches the checkpoint (e.g. mixnet-s vs mixnet-m) "
            "and pass --num-classes if the classifier differs.")
    module.load_state_dict(state_dict, strict=True)


def save_checkpoint(path: str | os.PathLike, loaded_or_module: LoadedModel | nn.Module, *, model: str | None = None,
                    num_classes: int | None = None, preprocessing: Preprocessing | None = None,
                    half: bool = False, extra: dict | None = None) -> Path:
    """Write a self-describing checkpoint (state dict + mixdeploy metadata), atomically.

    half=True stores floating tensors as fp16 (half the size; load_model casts back to float32).
    """
    if isinstance(loaded_or_module, LoadedModel):
        module = loaded_or_module.module
        model = model or loaded_or_module.name
        num_classes = num_classes or loaded_or_module.num_classes
        preprocessing = preprocessing or loaded_or_module.preprocessing
    else:
        module = loaded_or_module
    if not model:
        raise ValueError("save_checkpoint needs the model name")
    model = canonical_name(model)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().clone()
             for k, v in module.state_dict().items()}
    metadata = {"model": model, "num_classes": int(num_classes or infer_num_classes(state) or 1000),
                "preprocessing": (preprocessing or default_preprocessing(model)).to_dict(), **(extra or {})}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, METADATA_KEY: metadata}, tmp)
    return Path(path)
