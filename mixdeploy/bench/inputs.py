"""The inputs of on-device parity (`mixdeploy bench --parity`, on a phone or on the ARM64 twin)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mixdeploy import data
from mixdeploy.artifacts import ExportFolder
from mixdeploy.bench.host import tflite_input_details
from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import Preprocessing


def parity_images(tflite_path: str, source: str, count: int) -> data.ImageSet:
    """The images a .tflite's on-device parity runs (`.images`: NCHW float32, preprocessed), with
    labels when the source has them: a .npy of preprocessed images as is, else mixdeploy.data with
    the model's preprocessing (from its export's manifest, else defaults at its input size)."""
    if source.endswith(".npy"):
        return data.ImageSet(images=load_preprocessed_npy(source, count), labels=None, class_names=None, source=source)
    preprocessing = ExportFolder.beside(tflite_path).preprocessing()
    if preprocessing is None:
        shape = tflite_input_details(tflite_path)["shape"]
        preprocessing = Preprocessing().with_size(int(shape[1]))
    return data.load_images(source, preprocessing, limit=count)


def load_preprocessed_npy(source: str, count: int) -> np.ndarray:
    """A .npy of preprocessed NCHW float32 inputs, checked: shape, dtype, finite values."""
    if not Path(source).is_file():
        raise MixdeployError(f"--parity-data {source}: no such file")
    try:
        array = np.load(source, allow_pickle=False)
    except ValueError as err:
        raise MixdeployError(f"cannot read {source} as .npy ({err}); save one float32 array with numpy.save") from None
    if array.dtype != np.float32 or array.ndim != 4:
        raise MixdeployError(f"{source} must hold N x C x H x W float32 preprocessed images "
                             f"(got {array.dtype} {array.shape})")
    array = array[:count]
    if not np.isfinite(array).all():
        raise MixdeployError(f"{source} holds {int(array.size - np.count_nonzero(np.isfinite(array)))} NaN/inf "
                             "values: save finite preprocessed images")
    return array
