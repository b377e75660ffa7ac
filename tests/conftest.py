"""Shared fixtures: the committed Fashion-MNIST checkpoint and artifacts built from it.

Everything here is built from files in the repo and Debian's dataset-fashion-mnist; nothing
is downloaded. Session-scoped: the ONNX export and the TFLite conversions are paid once.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# The `auto` lowering caches its per-layer timings; tests measure into a private folder so a
# developer's real cache neither leaks into test results nor gets filled by them.
os.environ.setdefault("MIXDEPLOY_CACHE_DIR", tempfile.mkdtemp(prefix="mixdeploy-test-cache-"))

TESTS = Path(__file__).resolve().parent
# tests/ is on the import path through pyproject's `pythonpath = ["tests"]` (shared helpers:
# `from timm_oracle import timm`, `from convert_support import ...`).

REPO = TESTS.parent
# MIXDEPLOY_TEST_CHECKPOINT lets a developer point the fixtures at another checkpoint of the same kind.
CHECKPOINT = Path(os.environ.get("MIXDEPLOY_TEST_CHECKPOINT",
                                 REPO / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist.pt"))
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
CALIBRATION_IMAGES = 64


def _require_fashion_mnist():
    root = Path(os.environ.get("MIXDEPLOY_FASHION_MNIST_DIR", FASHION_MNIST_DIR))
    if not (root / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST missing: apt-get install -y dataset-fashion-mnist")


@pytest.fixture(scope="session")
def trained_checkpoint() -> Path:
    """Path of the committed MixNet-S Fashion-MNIST checkpoint (fp16 state dict + metadata)."""
    if not CHECKPOINT.exists():
        pytest.skip(f"{CHECKPOINT.name} not present; run scripts/train_fashion_mnist.py")
    return CHECKPOINT


@pytest.fixture(scope="session")
def trained_model(trained_checkpoint):
    """LoadedModel of the checkpoint (eval mode, its own preprocessing: 32x32, crop_pct 1.0)."""
    from mixdeploy.models import load_model

    return load_model(str(trained_checkpoint))


@pytest.fixture(scope="session")
def fashion_mnist_small(trained_model):
    """256 Fashion-MNIST test images (ImageSet) preprocessed for the trained checkpoint."""
    _require_fashion_mnist()
    from mixdeploy.data import load_images

    return load_images("fashion-mnist", trained_model.preprocessing, limit=256)


@pytest.fixture(scope="session")
def fashion_mnist_calibration(trained_model) -> np.ndarray:
    """64 Fashion-MNIST *training* images (NCHW float32) for int8 calibration."""
    _require_fashion_mnist()
    from mixdeploy.data import load_images

    return load_images("fashion-mnist", trained_model.preprocessing, limit=CALIBRATION_IMAGES, split="train").images


@dataclass
class TrainedArtifacts:
    onnx: Path            # exported (float) ONNX
    onnx_opt: Path        # after the rewrite passes (what the TFLite models are converted from)
    tflite_fp32: Path
    tflite_int8: Path     # full-integer, int8 I/O, NHWC input
    calibration: np.ndarray


@pytest.fixture(scope="session")
def trained_artifacts(trained_model, fashion_mnist_calibration, tmp_path_factory) -> TrainedArtifacts:
    """ONNX (exported + rewritten), fp32 and int8 TFLite of the trained checkpoint, as the pipeline builds them."""
    import onnx

    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    out = tmp_path_factory.mktemp("trained_artifacts")
    size = trained_model.preprocessing.input_size
    exported = export_onnx(trained_model.module, size, out / "model.onnx")
    # 'split' is the deterministic lowering ('auto' times layers on this machine)
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="split").model
    onnx.save(rewritten, str(out / "model.opt.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(rewritten, out / "model_fp32.tflite", precision="fp32")
        convert_onnx(rewritten, out / "model_int8.tflite", precision="int8",
                     calibration=fashion_mnist_calibration, io_dtype="int8")
    return TrainedArtifacts(onnx=Path(exported.path), onnx_opt=out / "model.opt.onnx",
                            tflite_fp32=out / "model_fp32.tflite", tflite_int8=out / "model_int8.tflite",
                            calibration=fashion_mnist_calibration)


@pytest.fixture(scope="session")
def trained_int8_64px(trained_model, tmp_path_factory) -> Path:
    """The checkpoint's int8 TFLite (int8 I/O) at 64 px, twice the size it was trained at (MixNets
    are fully convolutional; its accuracy there is not the point). For the ARM64 twin: at 32 px
    the twin's int8 outputs equal x86 LiteRT's bit for bit (0 of 10,000 measured), at 64 px
    about 3% of them differ by 1-5 steps on an AMD EPYC host, so tests can see the ARM kernels' own rounding
    (on an Intel Xeon with AVX-512 VNNI none did: which x86 kernels XNNPACK picks depends on the CPU).
    Whether any differ depends on the model's scales, i.e. on the recipe and the calibration
    images (on 200 test images: `avgminmax` 46 of 2000 values, `minmax` and `default` 0), so this
    fixture pins the `avgminmax` recipe."""
    import onnx

    from mixdeploy.data import load_images
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    _require_fashion_mnist()
    out = tmp_path_factory.mktemp("trained_int8_64px")
    preprocessing = trained_model.preprocessing.with_size(64)
    calibration = load_images("fashion-mnist", preprocessing, limit=CALIBRATION_IMAGES, split="train").images
    exported = export_onnx(trained_model.module, 64, out / "model.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="split").model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(rewritten, out / "model_int8.tflite", precision="int8", calibration=calibration,
                     io_dtype="int8", recipe="avgminmax")
    return out / "model_int8.tflite"
