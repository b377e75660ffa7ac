"""mixdeploy.data: sources, preprocessing (checked against timm's eval transform) and clear errors."""

from __future__ import annotations

import gzip
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mixdeploy import data
from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import Preprocessing

SMALL = Preprocessing(input_size=32, crop_pct=1.0, interpolation="bicubic")


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.fromarray(getattr(skimage.data, name)())


def _timm_eval_transform(pre: Preprocessing):
    from timm_oracle import timm

    return timm.data.create_transform(input_size=pre.input_size, is_training=False, crop_pct=pre.crop_pct,
                                      interpolation=pre.interpolation, mean=pre.mean, std=pre.std)


@pytest.mark.parametrize("photo,pre", [
    ("astronaut", Preprocessing()),                                            # square, 224 / 0.875
    ("chelsea", Preprocessing(input_size=96, crop_pct=0.9, interpolation="bilinear")),  # landscape
    ("camera", Preprocessing(input_size=64, crop_pct=1.0)),                  # grey -> 3 channels
])
def test_preprocessing_matches_timm_eval_transform(photo, pre):
    image = _photo(photo)
    ours = pre.normalize(data.preprocess_image(image, pre)[None])[0]
    reference = _timm_eval_transform(pre)(image.convert("RGB")).numpy()
    assert ours.shape == reference.shape == (3, pre.input_size, pre.input_size)
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_roundtrip(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    _write_idx(tmp_path / "x.gz", array)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "x.gz"), array)


def test_read_idx_truncated_is_a_clear_error(tmp_path):
    array = np.zeros((4, 4), np.uint8)
    path = tmp_path / "x.gz"
    _write_idx(path, array)
    with gzip.open(path, "rb") as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-3])
    with pytest.raises(MixdeployError, match="truncated"):
        data.read_idx(path)


def test_fashion_mnist_test_split_facts():
    images, labels = data.load_fashion_mnist_raw("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    # the published test split holds exactly 1000 images of each of the 10 classes
    assert np.bincount(labels).tolist() == [1000] * 10


def test_fashion_mnist_load_images_is_preprocessed_like_a_grey_photo():
    pre = Preprocessing(input_size=40, crop_pct=1.0)
    images = data.load_images("fashion-mnist", pre, limit=3)
    raw, labels = data.load_fashion_mnist_raw("test")
    assert images.images.shape == (3, 3, 40, 40) and images.images.dtype == np.float32
    assert images.labels.tolist() == labels[:3].tolist()
    assert images.class_names[0] == "T-shirt/top" and images.class_names[9] == "Ankle boot"
    reference = _timm_eval_transform(pre)(Image.fromarray(raw[1]).convert("RGB")).numpy()
    np.testing.assert_allclose(images.images[1], reference, atol=1e-5)


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(data.FASHION_MNIST_DIR_ENV, str(tmp_path))
    with pytest.raises(MixdeployError, match=r"apt-get install -y dataset-fashion-mnist"):
        data.load_images("fashion-mnist", SMALL)


def _save_png(path, size=(20, 30), colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_image_folder_labels_follow_sorted_class_folders(tmp_path):
    _save_png(tmp_path / "zebra" / "a.png", colour=(0, 0, 255))
    _save_png(tmp_path / "apple" / "b.png", colour=(255, 0, 0))
    _save_png(tmp_path / "apple" / "c.jpg", colour=(255, 0, 0))
    images = data.load_images(str(tmp_path), SMALL)
    assert images.class_names == ["apple", "zebra"]
    assert images.labels.tolist() == [0, 0, 1]
    # red images -> red channel brightest after normalization; the blue one -> blue channel
    assert images.images[0, 0].mean() > images.images[0, 2].mean()
    assert images.images[2, 2].mean() > images.images[2, 0].mean()


def test_flat_folder_has_no_labels_and_limit_applies(tmp_path):
    for i in range(4):
        _save_png(tmp_path / f"{i}.png", size=(10 + i, 12))  # mixed sizes are fine in a folder
    (tmp_path / "README.txt").write_text("not an image")
    images = data.load_images(str(tmp_path), SMALL, limit=3)
    assert images.labels is None and images.class_names is None
    assert images.images.shape == (3, 3, 32, 32)


def test_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MixdeployError, match="no images found"):
        data.load_images(str(tmp_path), SMALL)


def test_unreadable_image_file_is_named(tmp_path):
    _save_png(tmp_path / "ok.png")
    (tmp_path / "broken.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(MixdeployError, match=r"broken\.jpg"):
        data.load_images(str(tmp_path), SMALL)


def _coloured_folder(root, count=6):
    """An ImageFolder of `count` images alternating between two classes, each image its own colour."""
    for i in range(count):
        _save_png(root / ("blue" if i % 2 else "red") / f"{i}.png", size=(20 + i, 24), colour=(40 * i, 0, 255 - 40 * i))


def test_list_file_gives_the_images_and_labels_of_the_folder_it_lists(tmp_path):
    _coloured_folder(tmp_path / "images")
    folder = data.load_images(str(tmp_path / "images"), SMALL)
    # relative paths resolve against the list file's folder, whatever the working directory
    lines = [f"images/{folder.class_names[label]}/{Path(f).name} {label}"
             for f, label in zip(data.index_images(str(tmp_path / "images")).files, folder.labels)]
    (tmp_path / "val.txt").write_text("# path label\n\n" + "\n".join(lines) + "\n")
    listed = data.load_images(str(tmp_path / "val.txt"), SMALL)
    np.testing.assert_array_equal(listed.images, folder.images)
    assert listed.labels.tolist() == folder.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert listed.class_names is None and "list file, labeled, 6 images" in listed.source
    assert len(data.load_images(str(tmp_path / "val.txt"), SMALL, limit=4)) == 4


def test_list_file_without_labels_is_agreement_only(tmp_path):
    _coloured_folder(tmp_path, count=2)
    (tmp_path / "list.lst").write_text(f"{tmp_path / 'red' / '0.png'}\nblue/1.png\n")   # absolute and relative
    images = data.load_images(str(tmp_path / "list.lst"), SMALL)
    assert images.labels is None and len(images) == 2


@pytest.mark.parametrize("content,message", [
    ("red/0.png 0\nred/missing.png 1\n", r"line 2: image .*missing\.png not found"),
    ("red/0.png 0\nblue/1.png\n", "some lines have a label and some do not"),
    ("red/0.png -1\n", "label -1 is negative"),
    ("# nothing\n\n", "lists no images"),
])
def test_bad_list_files_say_which_line_and_what_to_do(tmp_path, content, message):
    _coloured_folder(tmp_path, count=2)
    (tmp_path / "bad.txt").write_text(content)
    with pytest.raises(MixdeployError, match=message):
        data.load_images(str(tmp_path / "bad.txt"), SMALL)


@pytest.mark.parametrize("kind", ["fashion-mnist", "folder", "npy"])
def test_slices_of_an_index_put_together_are_load_images(tmp_path, kind):
    """What a Ray run relies on: workers loading slices see exactly the images of the local run."""
    if kind == "folder":
        _coloured_folder(tmp_path, count=7)
        source = str(tmp_path)
    elif kind == "npy":
        np.save(tmp_path / "x.npy", np.random.default_rng(2).random((7, 20, 20, 3), dtype=np.float32))
        source = str(tmp_path / "x.npy")
    else:
        source = "fashion-mnist"
    whole = data.load_images(source, SMALL, limit=7)
    index = data.index_images(source, limit=7)
    parts = [data.load_slice(index, SMALL, start, min(start + 3, 7)) for start in (0, 3, 6)]
    np.testing.assert_array_equal(np.concatenate(parts), whole.images)
    assert index.source == whole.source and len(index) == 7


def test_npy_layouts_and_dtypes_agree(tmp_path):
    rng = np.random.default_rng(1)
    nhwc_u8 = rng.integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc_u8)
    np.save(tmp_path / "nchw.npy", nhwc_u8.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    a = data.load_images(str(tmp_path / "nhwc.npy"), SMALL)
    b = data.load_images(str(tmp_path / "nchw.npy"), SMALL)
    np.testing.assert_allclose(a.images, b.images, atol=1e-6)
    reference = np.stack([_timm_eval_transform(SMALL)(Image.fromarray(img)).numpy() for img in nhwc_u8])
    np.testing.assert_allclose(a.images, reference, atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 32, 32), (4, 32, 32, 1), (4, 5, 32, 32), (32, 32, 3)])
def test_npy_of_wrong_shape_is_a_clear_error(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    with pytest.raises(MixdeployError, match=r"expected 4-D images \(N,3,H,W\) or \(N,H,W,3\)"):
        data.load_images(str(tmp_path / "x.npy"), SMALL)


def test_npy_of_mixed_size_images_is_a_clear_error(tmp_path):
    mixed = np.empty(2, dtype=object)
    mixed[0], mixed[1] = np.zeros((8, 8, 3), np.float32), np.zeros((9, 9, 3), np.float32)
    np.save(tmp_path / "mixed.npy", mixed, allow_pickle=True)
    with pytest.raises(MixdeployError, match="mixed sizes"):
        data.load_images(str(tmp_path / "mixed.npy"), SMALL)


def test_npy_already_normalized_is_refused(tmp_path):
    np.save(tmp_path / "norm.npy", np.full((1, 3, 8, 8), -2.0, np.float32))
    with pytest.raises(MixdeployError, match=r"\[0,1\]"):
        data.load_images(str(tmp_path / "norm.npy"), SMALL)


def test_labels_that_do_not_match_the_model_are_refused(tmp_path):
    for name in ("a", "b", "c"):
        _save_png(tmp_path / name / "x.png")
    images = data.load_images(str(tmp_path), SMALL)
    data.check_labels_match(images, 3)  # matching: fine
    with pytest.raises(MixdeployError, match="3 classes .* model predicts 10"):
        data.check_labels_match(images, 10)


def test_unknown_source_says_what_is_accepted():
    with pytest.raises(MixdeployError, match="fashion-mnist"):
        data.load_images("/nonexistent/place", SMALL)


def test_default_calibration_images_are_real_photos_with_a_warning():
    with pytest.warns(UserWarning, match="your own data"):
        images = data.default_calibration_images(SMALL, n=20)
    assert images.shape == (20, 3, 32, 32) and np.isfinite(images).all()
    # augmented views differ from one another (not 20 copies of a few photos)
    flat = images.reshape(20, -1)
    assert len({row.tobytes() for row in flat}) == 20
    # natural photos normalized with ImageNet statistics: roughly zero-mean, unit-ish spread
    assert abs(float(images.mean())) < 1.0 and 0.3 < float(images.std()) < 2.0


def test_calibration_images_are_deterministic():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = data.default_calibration_images(SMALL, n=14, seed=3)
        b = data.default_calibration_images(SMALL, n=14, seed=3)
    np.testing.assert_array_equal(a, b)
