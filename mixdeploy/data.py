"""Datasets and image preprocessing: every source becomes NCHW float32 made by one `Preprocessing`.

Sources understood by `load_images`:
  - ``fashion-mnist``: Debian's ``dataset-fashion-mnist`` (IDX files, parsed with numpy + gzip);
  - an ImageFolder-style directory (one sub-folder per class, labels = sorted folder names);
  - a flat directory of images (no labels);
  - a list file (``.txt``/``.lst``/``.list``): one ``path label`` per line, relative paths
    read from the list file's folder (labels optional, all or none);
  - a ``.npy`` of raw images, (N,3,H,W) or (N,H,W,3), uint8 0-255 or float in [0,1].

Parity, calibration and on-device runs must see the same tensors as training did, so all
image sources go through `preprocess_image` (PIL, following the model's `Preprocessing`).
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import Preprocessing

log = logging.getLogger(__name__)

FASHION_MNIST_DIR_ENV = "MIXDEPLOY_FASHION_MNIST_DIR"
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# Files that commonly sit beside images and are not meant as data; anything else that PIL
# cannot read is reported rather than silently skipped (a silently smaller set skews parity).
IGNORED_SUFFIXES = {".txt", ".md", ".json", ".csv", ".yaml", ".yml", ".db", ".ini"}

# Real photos bundled with scikit-image (no network needed) used for default calibration.
CALIBRATION_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry",
    "hubble_deep_field", "retina", "colorwheel", "camera", "coins", "clock", "moon",
)


@dataclass
class ImageSet:
    images: np.ndarray                 # N,3,H,W float32, normalized by the Preprocessing
    labels: np.ndarray | None          # N int64, or None when the source has no labels
    class_names: list[str] | None
    source: str                        # human-readable description of where the images came from

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None


# ---------------------------------------------------------------- preprocessing


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return INTERPOLATIONS[interpolation]
    except KeyError:
        raise MixdeployError(
            f"unknown interpolation {interpolation!r} in preprocessing; use one of {sorted(INTERPOLATIONS)}"
        ) from None


def preprocess_image(image: Image.Image, preprocessing: Preprocessing) -> np.ndarray:
    """One PIL image -> 3,H,W float32 in [0,1] (not yet normalized).

    timm's eval transform: resize the shorter side to floor(input_size / crop_pct), center-crop
    input_size. Grey and palette images become RGB by channel replication.
    """
    image = image.convert("RGB")
    size = preprocessing.input_size
    scale_size = math.floor(size / preprocessing.crop_pct)
    width, height = image.size
    if width <= height:
        new_w, new_h = scale_size, max(scale_size, round(height * scale_size / width))
    else:
        new_w, new_h = max(scale_size, round(width * scale_size / height)), scale_size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), _resample(preprocessing.interpolation))
    left = int(round((new_w - size) / 2.0))
    top = int(round((new_h - size) / 2.0))
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) / 255.0


def preprocess_arrays(images_u8: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """N,H,W (grey) or N,H,W,3 uint8 -> normalized N,3,S,S float32."""
    out = np.empty((len(images_u8), 3, preprocessing.input_size, preprocessing.input_size), np.float32)
    for i, arr in enumerate(images_u8):
        out[i] = preprocess_image(Image.fromarray(arr), preprocessing)
    return preprocessing.normalize(out)


# ---------------------------------------------------------------- the index: a source without its pixels
#
# Every source is first listed as an `ImageIndex` (file names, labels, the array file and how
# many images), then read slice by slice with `load_slice`. A local run reads one slice, all of
# it; a Ray run (mixdeploy.parity_ray) sends the index to its workers, each of which reads and
# preprocesses its own slices from the paths they share: both see the same images, made by the
# same code.


@dataclass
class ImageIndex:
    kind: str                          # "fashion-mnist" (IDX file), "npy" (array file) or "files" (images)
    source: str                        # human-readable; becomes ImageSet.source
    count: int
    labels: np.ndarray | None          # count int64, or None when the source has no labels
    class_names: list[str] | None
    path: str | None = None            # "fashion-mnist": the IDX images file; "npy": the .npy file
    files: list[str] | None = None     # "files": absolute image paths, in order
    rows: np.ndarray | None = None     # "fashion-mnist": the IDX rows listed (None: the first `count`)

    def __len__(self) -> int:
        return self.count

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names is not None else None

    def load(self, preprocessing: Preprocessing, stop: int | None = None) -> ImageSet:
        """The first `stop` images (all by default), preprocessed, with their labels."""
        stop = self.count if stop is None else min(stop, self.count)
        return ImageSet(images=load_slice(self, preprocessing, 0, stop),
                        labels=self.labels[:stop] if self.labels is not None else None,
                        class_names=self.class_names, source=self.source)


def _limited_files(files: list[Path], labels: list[int] | None, limit: int | None):
    """At most `limit` files; labeled sets spread the limit over classes (a seeded subset kept in
    order): the first `limit` files of a class-sorted list would cover only the first classes."""
    if limit is None or limit >= len(files):
        return files, labels
    if labels is None:
        return files[:limit], None
    order = sorted(np.random.default_rng(0).permutation(len(files))[:limit])
    return [files[i] for i in order], [labels[i] for i in order]


def _files_index(files: list[Path], labels: list[int] | None, class_names, limit, describe) -> ImageIndex:
    files, labels = _limited_files(files, labels, limit)
    return ImageIndex(kind="files", source=describe(len(files)), count=len(files),
                      labels=np.asarray(labels, np.int64) if labels is not None else None,
                      class_names=class_names, files=[str(f.absolute()) for f in files])


def load_slice(index: ImageIndex, preprocessing: Preprocessing, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Images [start, stop) of `index` as normalized NCHW float32, following `preprocessing`."""
    stop = index.count if stop is None else min(stop, index.count)
    if index.kind == "fashion-mnist":
        if index.rows is not None:
            return preprocess_arrays(_idx_images(index.path, int(index.rows[-1]) + 1)[index.rows[start:stop]], preprocessing)
        return preprocess_arrays(_idx_images(index.path, stop)[start:stop], preprocessing)
    if index.kind == "npy":
        path = Path(index.path)
        return preprocess_arrays(_as_nhwc_u8(_open_npy(path)[start:stop], path), preprocessing)
    return _preprocess_files([Path(f) for f in index.files[start:stop]], preprocessing)


# ---------------------------------------------------------------- Fashion-MNIST


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV, FASHION_MNIST_DEFAULT_DIR))


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (gzip or raw): magic 0x00 0x00 <dtype 0x08=uint8> <ndim>, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:   # a cut-off download or a damaged disk
        raise MixdeployError(f"{path} is truncated or corrupt ({type(err).__name__}: {err}); reinstall with "
                             "`apt-get install --reinstall dataset-fashion-mnist`") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise MixdeployError(f"{path} is not an IDX uint8 file; reinstall with `apt-get install --reinstall dataset-fashion-mnist`")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims))
    if len(data) - offset != expected:
        raise MixdeployError(f"{path} is truncated ({len(data) - offset} of {expected} bytes); reinstall `dataset-fashion-mnist`")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(tuple(dims))


def _fashion_mnist_files(split: str) -> tuple[Path, Path]:
    if split not in FASHION_MNIST_FILES:
        raise MixdeployError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = fashion_mnist_dir()
    image_file, label_file = (root / name for name in FASHION_MNIST_FILES[split])
    if not image_file.exists() or not label_file.exists():
        raise MixdeployError(
            f"Fashion-MNIST not found in {root} (missing {image_file.name if not image_file.exists() else label_file.name}). "
            f"Install it with `apt-get install -y dataset-fashion-mnist`, or set {FASHION_MNIST_DIR_ENV} "
            "to a folder holding the IDX .gz files."
        )
    return image_file, label_file


@functools.lru_cache(maxsize=2)
def _read_idx_cached(path: str, mtime_ns: int, size: int) -> np.ndarray:
    return read_idx(Path(path))


def _idx_images(path: str, needed: int) -> np.ndarray:
    """The decoded IDX images file, cached: a Ray worker reads many slices of one gzip file."""
    stat = os.stat(path)
    images = _read_idx_cached(path, stat.st_mtime_ns, stat.st_size)
    if images.ndim != 3 or len(images) < needed:
        raise MixdeployError(f"{path} holds {images.shape} images where {needed} labels were listed; "
                             "reinstall `dataset-fashion-mnist`")
    return images


def load_fashion_mnist_raw(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """-> (N,28,28 uint8 images, N int64 labels) of the `split` ('train' or 'test')."""
    image_file, label_file = _fashion_mnist_files(split)
    labels = read_idx(label_file).astype(np.int64)
    images = _idx_images(str(image_file), len(labels))
    if labels.shape != (images.shape[0],):
        raise MixdeployError(f"Fashion-MNIST files in {fashion_mnist_dir()} are inconsistent; reinstall `dataset-fashion-mnist`")
    return images, labels


# Calibration subsets of the train split are a seeded sample of the whole split, not its first
# images: on the 224-px MixNet-S the first 64 train images gave 98.15% int8 agreement, three
# random draws 98.55-98.85% (docs/accuracy.md). The seed is draw 0 of benchmarks/accuracy.py.
TRAIN_SAMPLE_SEED = 1000


def train_sample_rows(total: int, count: int, seed: int = TRAIN_SAMPLE_SEED) -> np.ndarray:
    """`count` train rows out of `total`, drawn without repeats by `seed`, in file order."""
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def _fashion_mnist_index(limit: int | None, split: str) -> ImageIndex:
    """Reads only the labels: the pixels are read by whoever loads the slices. A limited train
    split is a seeded sample (train_sample_rows); a limited test split is its first images."""
    image_file, label_file = _fashion_mnist_files(split)
    labels = read_idx(label_file).astype(np.int64)
    if labels.ndim != 1:
        raise MixdeployError(f"{label_file} is not a label file; reinstall `dataset-fashion-mnist`")
    rows = None
    if split == "train" and limit is not None and limit < len(labels):
        rows = train_sample_rows(len(labels), limit)
        labels, what = labels[rows], f"{limit} sampled (seed {TRAIN_SAMPLE_SEED})"
    else:
        labels = labels[:limit]
        what = str(len(labels))
    return ImageIndex(kind="fashion-mnist", count=len(labels), labels=labels, class_names=list(FASHION_MNIST_CLASSES),
                      source=f"fashion-mnist/{split} ({what} images from {fashion_mnist_dir()})",
                      path=str(image_file.absolute()), rows=rows)


def load_fashion_mnist(preprocessing: Preprocessing, limit: int | None = None, split: str = "test") -> ImageSet:
    return load_images("fashion-mnist", preprocessing, limit=limit, split=split)


# ---------------------------------------------------------------- folders


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder` (sorted); unreadable files raise instead of vanishing."""
    files = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.suffix.lower() in IGNORED_SUFFIXES:
            continue
        files.append(path)
    return files


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except Exception as err:  # PIL raises several types for bad or unknown files
        raise MixdeployError(
            f"cannot read {path} as an image ({type(err).__name__}: {err}). "
            "Use JPEG/PNG/BMP/WebP/TIFF files, or remove it from the folder."
        ) from None


def _preprocess_files(files: list[Path], preprocessing: Preprocessing) -> np.ndarray:
    out = np.empty((len(files), 3, preprocessing.input_size, preprocessing.input_size), np.float32)
    for i, path in enumerate(files):
        out[i] = preprocess_image(_open_image(path), preprocessing)
    return preprocessing.normalize(out)


def _folder_index(folder: Path, limit: int | None) -> ImageIndex:
    """ImageFolder layout (class sub-folders) when there are sub-folders, else a flat unlabeled folder."""
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_dirs:
        files, labels = [], []
        for label, class_dir in enumerate(class_dirs):
            for path in _image_files(class_dir):
                files.append(path)
                labels.append(label)
        class_names = [p.name for p in class_dirs]
        kind = f"ImageFolder with {len(class_names)} classes"
    else:
        files, labels, class_names = _image_files(folder), None, None
        kind = "flat folder, no labels"
    if not files:
        raise MixdeployError(f"no images found in {folder}; put images in it (or one sub-folder per class)")
    return _files_index(files, labels, class_names, limit, lambda n: f"{folder} ({kind}, {n} images)")


# ---------------------------------------------------------------- list files


def _parse_list_line(line: str, where: str, folder: Path) -> tuple[Path, int | None]:
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and parts[1].lstrip("-").isdigit():
        path, label = parts[0], int(parts[1])
        if label < 0:
            raise MixdeployError(f"{where}: label {label} is negative; labels are class indices 0, 1, ...")
    else:
        path, label = line, None
    file = Path(path).expanduser()
    file = file if file.is_absolute() else folder / file
    if not file.is_file():
        raise MixdeployError(f"{where}: image {file} not found (relative paths are read from the list file's folder)")
    return file, label


def _list_file_index(list_file: Path, limit: int | None) -> ImageIndex:
    """One `path label` per line (`#` comments and blank lines skipped); relative paths are
    resolved against the list file's folder; a list without labels is agreement-only."""
    try:
        text = list_file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise MixdeployError(f"cannot read the list file {list_file}: {err}") from None
    files, labels = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        file, label = _parse_list_line(line, f"{list_file} line {number}", list_file.parent)
        files.append(file)
        labels.append(label)
    if not files:
        raise MixdeployError(f"{list_file} lists no images; write one `path label` per line")
    labeled = [label is not None for label in labels]
    if any(labeled) and not all(labeled):
        first = labeled.index(False) if labeled[0] else labeled.index(True)
        raise MixdeployError(f"{list_file}: some lines have a label and some do not (first odd one: image {first + 1}); "
                             "give every line `path label`, or no line a label")
    labels = labels if all(labeled) else None
    kind = "list file, labeled" if labels is not None else "list file, no labels"
    return _files_index(files, labels, None, limit, lambda n: f"{list_file} ({kind}, {n} images)")


# ---------------------------------------------------------------- .npy


def _open_npy(path: Path) -> np.ndarray:
    """Memory-mapped: an index needs only the shape, a slice reads only its own rows."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err) or "Python objects" in str(err):
            raise MixdeployError(
                f"{path} holds an object array (images of mixed sizes?). Save one array of equal-size "
                "images, (N,3,H,W) or (N,H,W,3), or put the images in a folder instead."
            ) from None
        raise MixdeployError(f"cannot read {path} as .npy: {err}") from None


def _check_npy_layout(array: np.ndarray, path: Path) -> None:
    if array.ndim != 4 or not (array.shape[1] == 3 or array.shape[3] == 3):
        raise MixdeployError(
            f"{path} has shape {array.shape}; expected 4-D images (N,3,H,W) or (N,H,W,3) with 3 colour channels"
        )
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise MixdeployError(f"{path} has dtype {array.dtype}; expected uint8 (0-255) or float (0-1) images")


def _check_npy_values(array: np.ndarray, path: Path, offset: int = 0) -> None:
    """Float pixels must be finite and in [0,1]: a NaN would turn into an arbitrary uint8 and
    calibrate (or "agree") on garbage."""
    if array.dtype == np.uint8 or not len(array):
        return
    finite = np.isfinite(array)
    if not finite.all():
        image = offset + int(np.argwhere(~finite)[0][0])
        count = int(array.size - np.count_nonzero(finite))
        raise MixdeployError(f"{path} holds {count} NaN/inf values (the first in image {image}); "
                             "save finite pixels (float in [0,1] or uint8)")
    lo, hi = float(array.min()), float(array.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise MixdeployError(
            f"{path} values span [{lo:.3g}, {hi:.3g}]; save raw pixels as float in [0,1] or uint8 "
            "(normalization is applied here, from the model's preprocessing)"
        )


def _as_nhwc_u8(array: np.ndarray, path: Path) -> np.ndarray:
    """Validate a raw image array and return N,H,W,3 uint8 for the PIL path."""
    _check_npy_layout(array, path)
    nhwc = array.transpose(0, 2, 3, 1) if array.shape[1] == 3 and array.shape[3] != 3 else array
    if nhwc.dtype == np.uint8:
        return np.asarray(nhwc)
    _check_npy_values(np.asarray(nhwc), path)
    return np.clip(np.rint(nhwc * 255.0), 0, 255).astype(np.uint8)


NPY_CHECK_ROWS = 256


def _npy_index(path: Path, limit: int | None) -> ImageIndex:
    array = _open_npy(path)
    _check_npy_layout(array, path)
    count = len(array) if limit is None else min(limit, len(array))
    if count == 0:
        raise MixdeployError(f"{path} holds no images")
    for start in range(0, count, NPY_CHECK_ROWS):   # read in slices: the file is memory-mapped
        _check_npy_values(np.asarray(array[start:min(count, start + NPY_CHECK_ROWS)]), path, offset=start)
    return ImageIndex(kind="npy", source=f"{path} ({count} images, no labels)", count=count, labels=None,
                      class_names=None, path=str(path.absolute()))


# ---------------------------------------------------------------- entry points

LIST_FILE_SUFFIXES = {".txt", ".lst", ".list"}
SOURCES_ACCEPTED = "give 'fashion-mnist', an image folder, a list file (.txt: `path label` per line) or a .npy file"


def index_images(source: str, limit: int | None = None, split: str = "test") -> ImageIndex:
    """List `source` (names, labels, counts; no pixels read): what `load_slice` loads from."""
    if limit is not None and limit <= 0:
        raise MixdeployError(f"--limit must be positive, got {limit}")
    if source.lower() in ("fashion-mnist", "fashion_mnist", "fashionmnist"):
        return _fashion_mnist_index(limit, split)
    path = Path(source).expanduser()
    if not path.exists():
        raise MixdeployError(f"data source {source!r} not found; {SOURCES_ACCEPTED}")
    if path.is_dir():
        return _folder_index(path, limit)
    if path.suffix.lower() == ".npy":
        return _npy_index(path, limit)
    if path.suffix.lower() in LIST_FILE_SUFFIXES:
        return _list_file_index(path, limit)
    raise MixdeployError(f"unsupported data source {path}; {SOURCES_ACCEPTED}")


def verify_index(index: ImageIndex) -> ImageIndex:
    """Read every image of `index` once (no preprocessing), so a damaged file is named before a
    long run rather than in the middle of it: the IDX pixels (then cached for the load), each
    image file decoded. A .npy's values were checked when it was indexed."""
    if index.kind == "fashion-mnist":
        _idx_images(index.path, index.count if index.rows is None else int(index.rows[-1]) + 1)
    elif index.kind == "files":
        for file in index.files:
            _open_image(Path(file))
    return index


def load_images(source: str, preprocessing: Preprocessing, limit: int | None = None, split: str = "test") -> ImageSet:
    """Load `source` as normalized NCHW float32 following `preprocessing`."""
    return index_images(source, limit=limit, split=split).load(preprocessing)


def check_labels_match(images: ImageSet | ImageIndex, num_classes: int) -> None:
    """Labeled data must use the model's label space, or accuracy numbers are meaningless."""
    if images.labels is None:
        return
    if images.num_classes is not None and images.num_classes != num_classes:
        raise MixdeployError(
            f"the data has {images.num_classes} classes ({images.source}) but the model predicts {num_classes}; "
            "use data labeled with the model's classes, a model trained on this data "
            "(e.g. --num-classes with matching weights), or an unlabeled folder for agreement-only parity"
        )
    if len(images.labels) and int(images.labels.max()) >= num_classes:
        raise MixdeployError(f"labels go up to {int(images.labels.max())} but the model has {num_classes} classes")


def _calibration_photos() -> list[np.ndarray]:
    import skimage.data

    photos = []
    for name in CALIBRATION_PHOTOS:
        try:
            photos.append(np.asarray(getattr(skimage.data, name)()))
        except Exception as err:  # a missing optional sample (pooch download) must not stop us
            log.debug("skipping skimage.data.%s: %s", name, err)
    if not photos:
        raise MixdeployError("scikit-image's sample photos are unavailable; pass calibration images explicitly (--calibration DIR)")
    return [p if p.ndim == 3 else np.stack([p] * 3, axis=-1) for p in photos]


def _random_view(photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A random crop (30-100% of the shorter side) with a random horizontal flip."""
    image = Image.fromarray(photo[..., :3].astype(np.uint8))
    w, h = image.size
    side = int(min(w, h) * rng.uniform(0.3, 1.0))
    left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    image = image.crop((left, top, left + side, top + side))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def default_calibration_images(preprocessing: Preprocessing, n: int = 64, seed: int = 0) -> np.ndarray:
    """`n` normalized NCHW images from scikit-image's bundled photos (the whole photo first, then
    random crops/flips). A generic stand-in: int8 ranges are best calibrated on the user's own data."""
    warnings.warn(
        "calibrating int8 on scikit-image's sample photos; for best int8 accuracy calibrate on "
        "images from your own data (e.g. 100-500 of them)",
        UserWarning,
        stacklevel=2,
    )
    rng = np.random.default_rng(seed)
    photos = _calibration_photos()
    out = np.empty((n, 3, preprocessing.input_size, preprocessing.input_size), np.float32)
    for i in range(n):
        photo = photos[i % len(photos)]
        view = Image.fromarray(photo[..., :3].astype(np.uint8)) if i < len(photos) else _random_view(photo, rng)
        out[i] = preprocess_image(view, preprocessing)
    return preprocessing.normalize(out)
