"""load_model: a model name (+ optional checkpoint) -> an eval-mode module with its facts.

Checkpoints accepted (read with torch.load(weights_only=True): no pickled code runs):
  * a bare state dict (what `torch.save(model.state_dict())` and timm's released .pth are);
  * a training checkpoint holding one under `state_dict_ema`, `model_ema`, `state_dict` or
    `model` (EMA first: timm's released ImageNet weights are the EMA ones);
  * a `.safetensors` file (timm's Hugging Face hub format), when safetensors is installed;
  * a mixdeploy checkpoint (`save_checkpoint`): {"state_dict": ..., "mixdeploy": {"model",
    "num_classes", "preprocessing"}} — the metadata names the model, so the file alone is a source.
A `module.` prefix (DataParallel / DDP) is stripped; weights are cast to float32 (fp16 files load).

Besides the zoo and `timm:<name>`, two bring-your-own sources (docs/byo.md):
  * `pkg.module:factory`: any importable function returning an nn.Module (torch.hub / timm
    entry-point convention), called with `factory_kwargs`; the module is the parity reference;
  * `FILE.onnx`: no PyTorch module at all; the reference is onnxruntime on that file, the input
    size is the file's, the rest of the preprocessing timm's ImageNet default unless told.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from mixdeploy.atomic import atomic_path
from mixdeploy.errors import MixdeployError
from mixdeploy.models.registry import (REGISTRY, TIMM_PREFIX, canonical_name, count_params, create_model,
                                       default_preprocessing, kernel_mix)
from mixdeploy.preprocess import Preprocessing, PreprocessingOverrides, resolve_preprocessing

STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
METADATA_KEY = "mixdeploy"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pth.tar", ".ckpt", ".bin", ".safetensors")
CLASSIFIER_KEYS = ("classifier.weight", "head.fc.weight", "fc.weight", "head.weight", "last_linear.weight")
MAX_KEYS_SHOWN = 10
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"  # checkpoints shipped with the package
# `pkg.module:factory` (uvicorn / setuptools entry-point syntax); `timm:` is matched before it.
FACTORY_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
ONNX_SUFFIX = ".onnx"
# what an ONNX file or a factory's module is assumed to want when nobody says: timm's ImageNet default
IMAGENET_DEFAULT = Preprocessing()


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    sha256: str
    path: str


@dataclass
class LoadedModel:
    module: nn.Module | None             # eval mode; None for an ONNX file (see onnx_model)
    name: str                            # canonical registry name, 'timm:<name>', the factory or the file name
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
    source_kind: str = "zoo"             # zoo, timm, checkpoint, factory or onnx (see `source_kind`)
    factory_kwargs: dict | None = None   # what a factory was called with
    onnx_model: Any = None               # onnx.ModelProto of an ONNX source, static HxW
    onnx_path: str | None = None
    onnx_sha256: str | None = None

    def preprocessing_guesses(self) -> list[str]:
        """Fields taken from a default although the weights came from elsewhere (a checkpoint, a
        factory, an ONNX file): their training preprocessing is unknown, so calibration and parity
        may be off. A zoo or timm model without weights has nothing to guess about."""
        if self.weights_path is None and self.source_kind in ("zoo", "timm"):
            return []
        return [name for name, source in self.preprocessing_sources.items() if source.startswith(DEFAULT_SOURCE)]

    def source_facts(self) -> dict:
        """Where the model came from, for manifest.json."""
        facts = {"source": self.source, "source_kind": self.source_kind}
        if self.factory_kwargs is not None:
            facts["factory_kwargs"] = self.factory_kwargs
        if self.onnx_path is not None:
            facts.update(onnx_path=self.onnx_path, onnx_sha256=self.onnx_sha256)
        return facts

    def to_manifest(self) -> dict:
        return {"model": self.name, **self.source_facts(), "num_classes": self.num_classes,
                "params": self.params, "weights_path": self.weights_path,
                "weights_sha256": self.weights_sha256, "kernel_mix": self.kernel_mix,
                "class_names": self.class_names,
                "preprocessing": self.preprocessing.to_dict()}


DEFAULT_SOURCE = "default"


def source_kind(source: str) -> str:
    """'timm', 'onnx' (a .onnx path), 'factory' (pkg.module:function), 'checkpoint' (a file or a
    bundled name) or 'zoo' (a registry name)."""
    source = str(source)
    if source.startswith(TIMM_PREFIX):
        return "timm"
    if source.lower().endswith(ONNX_SUFFIX):
        return "onnx"
    if FACTORY_PATTERN.match(source):
        return "factory"
    return "checkpoint" if checkpoint_named_by(source) is not None else "zoo"


def load_model(source: str, weights: str | os.PathLike | None = None, num_classes: int | None = None,
               input_size: int | None = None,
               preprocessing: PreprocessingOverrides | None = None,
               factory_kwargs: dict | None = None) -> LoadedModel:
    """Build `source` and load `weights` into it; returns the module in eval mode with its facts.

    source: a registry name ('mixnet-s', 'tf_mixnet_l', ...), 'timm:<name>', a mixdeploy
        checkpoint file (its metadata names the model), the name of a checkpoint shipped in
        mixdeploy/weights/ (e.g. 'mixnet-s-fashion-mnist'), 'pkg.module:factory' (a function
        returning an nn.Module, called with `factory_kwargs`), or an ONNX file (module=None,
        onnx_model set; the reference is onnxruntime on the file).

    num_classes: explicit value > checkpoint metadata > classifier shape in the weights > 1000
        (a factory gets it as its `num_classes` keyword; its model's output decides).
    input_size: shorthand for preprocessing=PreprocessingOverrides(input_size=...) (MixNets are
        fully convolutional).
    preprocessing: what the user said (flags, a config file); it wins over the checkpoint's
        metadata, which wins over the model's default.
    """
    if input_size is not None:
        preprocessing = dataclasses.replace(preprocessing or PreprocessingOverrides(), input_size=int(input_size))
    kind = source_kind(source)
    if factory_kwargs is not None and kind != "factory":
        raise MixdeployError(f"factory kwargs apply to a `pkg.module:function` source, not to {source!r}")
    if kind == "onnx":
        return load_onnx_source(source, weights, num_classes, preprocessing)
    if kind == "factory":
        return load_factory(source, factory_kwargs, weights, num_classes, preprocessing)
    return _load_named(source, kind, weights, num_classes, preprocessing)


def _load_named(source: str, kind: str, weights, num_classes, preprocessing) -> LoadedModel:
    source_is_checkpoint = weights is None and kind == "checkpoint"
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

    base, base_source = _base_preprocessing(meta, checkpoint, default_preprocessing(name), f"{DEFAULT_SOURCE} ({name})")
    resolved = resolve_preprocessing(base, base_source, preprocessing)
    return LoadedModel(module=module, name=name, source=str(source), num_classes=int(num_classes),
                       preprocessing=resolved.preprocessing, preprocessing_sources=resolved.sources,
                       weights_sha256=checkpoint.sha256 if checkpoint else None,
                       weights_path=checkpoint.path if checkpoint else None,
                       params=count_params(module), kernel_mix=kernel_mix(module),
                       class_names=list(meta["class_names"]) if meta.get("class_names") else None,
                       metadata=dict(meta), source_kind="timm" if name.startswith(TIMM_PREFIX) else kind)


def _base_preprocessing(meta: dict, checkpoint, default: Preprocessing, default_source: str):
    """The checkpoint's own preprocessing when its metadata has one, else `default`."""
    if meta.get("preprocessing"):
        return Preprocessing.from_dict(meta["preprocessing"]), f"checkpoint {Path(checkpoint.path).name}"
    return default, default_source


# ---------------------------------------------------------------- pkg.module:factory

def parse_factory_kwargs(text: str | None) -> dict | None:
    """--factory-kwargs JSON -> keyword arguments (None when not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise MixdeployError(f"--factory-kwargs is not valid JSON ({err}); give an object such as "
                             """'{"num_classes": 10, "width_mult": 0.5}' (single-quoted for the shell)""") from None
    if not isinstance(value, dict):
        raise MixdeployError(f"--factory-kwargs must be a JSON object of keyword arguments, got a JSON "
                             f"{type(value).__name__} ({text.strip()[:60]})")
    return value


def resolve_factory(spec: str) -> Callable[..., Any]:
    """'pkg.module:function' (or 'pkg.module:Class.method') -> the callable, with errors that say why not."""
    module_name, _, attribute = spec.partition(":")
    target: Any = _import_factory_module(module_name, spec)
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n, v in vars(target).items()   # what the module itself defines
                            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module_name)
            raise MixdeployError(f"{spec}: {module_name} has no attribute {attribute!r}"
                                 + (f"; it defines {', '.join(public[:12])}" if public else "") + ".")
        target = getattr(target, part)
    if not callable(target):
        raise MixdeployError(f"{spec} is a {type(target).__name__}, not a function: name a function that "
                             "returns the nn.Module (e.g. `def make_model(**kwargs): return MyNet(**kwargs)`).")
    return target


def _import_factory_module(module_name: str, spec: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing_is_ours = err.name is not None and (module_name == err.name or module_name.startswith(err.name + "."))
        # The console script does not put the working directory on sys.path (python -m does);
        # a factory module beside the user is what they mean, so look there once.
        if missing_is_ours and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
            return _import_factory_module(module_name, spec)
        if missing_is_ours:
            raise MixdeployError(f"{spec}: cannot import module {module_name!r} (no module named {err.name!r}). "
                                 "Run from the folder that holds it, add that folder to PYTHONPATH, or "
                                 "install its package.") from None
        raise MixdeployError(f"{spec}: importing {module_name} failed: it needs {err.name!r}, which is not "
                             f"installed (pip install it).") from None
    except Exception as err:  # a SyntaxError or any error raised at import time in the user's module
        raise MixdeployError(f"{spec}: importing {module_name} raised {type(err).__name__}: "
                             f"{_first_line(err)}") from err


def load_factory(spec: str, factory_kwargs: dict | None = None, weights=None, num_classes: int | None = None,
                 preprocessing: PreprocessingOverrides | None = None) -> LoadedModel:
    """Call the factory, load `weights` into its module, check it classifies a 1x3xSxS image."""
    factory = resolve_factory(spec)
    kwargs = dict(factory_kwargs or {})
    if num_classes is not None:
        if kwargs.get("num_classes", num_classes) != num_classes:
            raise MixdeployError(f"--num-classes {num_classes} contradicts num_classes={kwargs['num_classes']} "
                                 "in --factory-kwargs; give one of them")
        kwargs["num_classes"] = int(num_classes)
    module = _call_factory(factory, spec, kwargs, num_classes)
    checkpoint = read_checkpoint(weights) if weights is not None else None
    if checkpoint is not None:
        apply_state_dict(module, checkpoint.state_dict, what=f"{checkpoint.path} into the model of {spec}")
    else:
        check_finite(module.state_dict(), f"the model of {spec}")
    module.eval()
    meta = checkpoint.metadata if checkpoint else {}
    default, default_source = _module_preprocessing(module, spec)
    base, base_source = _base_preprocessing(meta, checkpoint, default, default_source)
    resolved = resolve_preprocessing(base, base_source, preprocessing)
    classes = _classifier_width(module, spec, resolved.preprocessing.input_size)
    return LoadedModel(module=module, name=spec, source=spec, num_classes=classes,
                       preprocessing=resolved.preprocessing, preprocessing_sources=resolved.sources,
                       weights_sha256=checkpoint.sha256 if checkpoint else None,
                       weights_path=checkpoint.path if checkpoint else None,
                       params=count_params(module), kernel_mix=kernel_mix(module),
                       class_names=list(meta["class_names"]) if meta.get("class_names") else None,
                       metadata=dict(meta), source_kind="factory", factory_kwargs=kwargs)


def _call_factory(factory, spec: str, kwargs: dict, num_classes) -> nn.Module:
    shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    try:
        module = factory(**kwargs)
    except Exception as err:  # whatever the user's code raises: name the call and the cause
        hint = (" (num_classes comes from --num-classes; drop it if the factory takes no num_classes)"
                if isinstance(err, TypeError) and num_classes is not None else "")
        raise MixdeployError(f"{spec}({shown}) raised {type(err).__name__}: {_first_line(err)}{hint}") from err
    if not isinstance(module, nn.Module):
        raise MixdeployError(f"{spec}({shown}) returned a {type(module).__name__}, not a torch.nn.Module; a factory "
                             "must return the model itself (the torch.hub / timm entry-point convention).")
    return module


def _module_preprocessing(module: nn.Module, spec: str) -> tuple[Preprocessing, str]:
    """A timm-built module carries its `pretrained_cfg`; anything else gets the ImageNet default (a guess)."""
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return (Preprocessing(input_size=int(cfg["input_size"][-1]), crop_pct=float(cfg.get("crop_pct", 0.875)),
                              interpolation=cfg.get("interpolation", "bicubic"),
                              mean=tuple(cfg.get("mean", IMAGENET_DEFAULT.mean)),
                              std=tuple(cfg.get("std", IMAGENET_DEFAULT.std))),
                f"pretrained_cfg of {spec}")
    return IMAGENET_DEFAULT, f"{DEFAULT_SOURCE} (timm ImageNet)"


def _classifier_width(module: nn.Module, spec: str, size: int) -> int:
    """Run one 1x3xSxS zero image: the model must return (1, classes) logits."""
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, size, size))
    except Exception as err:
        raise MixdeployError(f"the model from {spec} fails on a 1x3x{size}x{size} image ({type(err).__name__}: "
                             f"{_first_line(err)}); pass the size it takes with --input-size.") from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise MixdeployError(f"the model from {spec} returns {got} for one image; mixdeploy exports classifiers "
                             "returning one (N, classes) logits tensor.")
    return int(out.shape[1])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


# ---------------------------------------------------------------- FILE.onnx

def load_onnx_source(path: str | os.PathLike, weights=None, num_classes: int | None = None,
                     preprocessing: PreprocessingOverrides | None = None) -> LoadedModel:
    """An ONNX classifier as a source: input size from its input shape (a dynamic HxW needs
    --input-size), the rest of the preprocessing timm's ImageNet default unless told."""
    from mixdeploy.flops import count_macs_onnx
    from mixdeploy.onnx import load_onnx

    if weights is not None or num_classes is not None:
        raise MixdeployError(f"--weights/--num-classes apply to PyTorch models; {path} carries its own weights "
                             "and classifier.")
    told = resolve_preprocessing(IMAGENET_DEFAULT, DEFAULT_SOURCE, preprocessing)
    size_told = told.sources["input_size"] != DEFAULT_SOURCE
    model = load_onnx(path, input_size=told.preprocessing.input_size if size_told else None)
    check_finite(_onnx_constants(model), str(path))
    side = _square_image_side(model, path)
    if size_told and told.preprocessing.input_size != side:
        raise MixdeployError(f"{path} takes a fixed {side}x{side} input; input size "
                             f"{told.preprocessing.input_size} (from {told.sources['input_size']}) contradicts it. "
                             f"Drop it, or re-export the ONNX at that size.")
    resolved = resolve_preprocessing(IMAGENET_DEFAULT.with_size(side), f"{DEFAULT_SOURCE} (timm ImageNet)",
                                     preprocessing)
    if not size_told:
        resolved.sources["input_size"] = "ONNX input shape"
    report = count_macs_onnx(model)
    data = Path(path).read_bytes()
    return LoadedModel(module=None, name=Path(path).name, source=str(path),
                       num_classes=_onnx_classes(model, path), preprocessing=resolved.preprocessing,
                       preprocessing_sources=resolved.sources, params=report.params, source_kind="onnx",
                       onnx_model=model, onnx_path=str(path), onnx_sha256=hashlib.sha256(data).hexdigest())


def _onnx_constants(model) -> dict:
    """Initializers and Constant-node tensors of an ONNX graph, by name (external data read too)."""
    from onnx import numpy_helper

    constants = {}
    try:
        for tensor in model.graph.initializer:
            constants[tensor.name] = numpy_helper.to_array(tensor)
        for node in model.graph.node:
            for attribute in node.attribute:
                if node.op_type == "Constant" and attribute.HasField("t"):
                    constants[node.output[0] if node.output else node.name] = numpy_helper.to_array(attribute.t)
    except Exception as err:  # a tensor whose bytes do not match its shape (a damaged file)
        raise MixdeployError(f"cannot read the weights of the ONNX model ({type(err).__name__}: {_first_line(err)}); "
                             "the file is damaged: export it again") from err
    return constants


def _square_image_side(model, path) -> int:
    from mixdeploy.onnx import graph_inputs

    image = graph_inputs(model)[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    if dims[1] not in (3, None):
        raise MixdeployError(f"{path}: input '{image.name}' has shape {_shape_text(dims)}; mixdeploy feeds NCHW RGB "
                             "images (N,3,H,W). Re-export the model with a channels-first 3-channel input.")
    if dims[2] != dims[3]:
        raise MixdeployError(f"{path}: input '{image.name}' is {dims[2]}x{dims[3]}; mixdeploy exports square inputs.")
    return int(dims[2])


def _onnx_classes(model, path) -> int:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    dims = inferred.graph.output[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[1].HasField("dim_value"):
        raise MixdeployError(f"{path}: output '{inferred.graph.output[0].name}' has shape "
                             f"{_shape_text([d.dim_value if d.HasField('dim_value') else None for d in dims])}; "
                             "mixdeploy exports classifiers returning (N, classes) logits.")
    return int(dims[1].dim_value)


def _shape_text(dims) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


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
        reason = _torch_load_reason(err)
        raise MixdeployError(
            f"cannot read {path} as a PyTorch checkpoint ({reason}). The file is corrupt, truncated or "
            f"not a torch.save() file; re-download or re-save it. Only tensors/dicts load "
            f"(weights_only=True): re-save pickled objects with torch.save(model.state_dict(), path).") from err


def _torch_load_reason(err: Exception) -> str:
    """The line of torch.load's error that says what was wrong with the bytes.

    A weights-only load that fails opens with a paragraph suggesting weights_only=False (arbitrary code
    execution, and no help for a corrupt file); the unpickler's own complaint comes after it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    for i, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            said = line.split("WeightsUnpickler error:", 1)[1].strip() or (lines[i + 1] if i + 1 < len(lines) else "")
            return f"unpickler: {said}"[:200]
    return lines[0][:200]


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
    state_dict = {_strip_prefix(k): _to_float32(v) for k, v in tensors.items()}
    check_finite(state_dict, str(path))
    return state_dict, metadata


def check_finite(tensors: dict, where: str) -> None:
    """NaN/inf weights make every output NaN, and NaN argmaxes "agree" with each other: refuse
    them at load, naming the tensors. `tensors`: name -> torch tensor or numpy array."""
    import numpy as np

    bad = []
    for name, value in tensors.items():
        array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            bad.append(f"{name} ({int(array.size - np.count_nonzero(np.isfinite(array)))} of {array.size} values)")
    if bad:
        shown = ", ".join(bad[:MAX_KEYS_SHOWN]) + (", ..." if len(bad) > MAX_KEYS_SHOWN else "")
        raise MixdeployError(f"{where}: {len(bad)} weight tensor{'s hold' if len(bad) > 1 else ' holds'} NaN or infinite "
                             f"values: {shown}. The weights are damaged (a diverged training run, a bad "
                             "conversion): use another checkpoint.")


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
