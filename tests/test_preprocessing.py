"""The checkpoint's preprocessing, told by flags or a config file, reaches calibration, parity and the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from cli import cli
from mixdeploy.errors import MixdeployError
from mixdeploy.preprocess import (IMAGENET_MEAN, Preprocessing, PreprocessingOverrides, read_preprocess_config,
                                  resolve_preprocessing)
from mixdeploy.commands._options import join_channel_values

BASE = Preprocessing(input_size=224, crop_pct=0.875, interpolation="bicubic")


def test_flags_beat_the_config_file_which_beats_the_base(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architecture": "mixnet_s", "pretrained_cfg": {
        "input_size": [3, 160, 160], "interpolation": "bilinear", "crop_pct": 1.0,
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "crop_mode": "center"}}))
    resolved = resolve_preprocessing(BASE, "checkpoint x.pt",
                                     PreprocessingOverrides(interpolation="nearest", config=config))
    p = resolved.preprocessing
    assert (p.input_size, p.crop_pct, p.interpolation, p.mean, p.std) == (160, 1.0, "nearest", (0.5,) * 3, (0.5,) * 3)
    assert resolved.sources["interpolation"] == "flag"
    assert resolved.sources["input_size"] == f"config {config}"
    untouched = resolve_preprocessing(BASE, "checkpoint x.pt", PreprocessingOverrides(crop_pct=0.9))
    assert untouched.sources["mean"] == "checkpoint x.pt" and untouched.preprocessing.crop_pct == 0.9


@pytest.mark.parametrize("document, expected", [
    # timm's data config at the top level (timm.data.resolve_data_config output, saved as JSON)
    ({"input_size": [3, 192, 192], "interpolation": "bilinear", "crop_pct": 0.95,
      "mean": IMAGENET_MEAN, "std": [0.229, 0.224, 0.225]},
     {"input_size": 192, "interpolation": "bilinear", "crop_pct": 0.95}),
    # transformers preprocessor_config.json: resize shortest edge 256, center crop 224, PIL bicubic (3)
    ({"image_processor_type": "ConvNextImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
      "resample": 3, "size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "do_center_crop": True},
     {"input_size": 224, "crop_pct": 0.875, "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5)}),
    # a mixdeploy manifest.json
    ({"preprocessing": {"input_size": 64, "crop_pct": 1.0, "interpolation": "bilinear",
                        "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]}, "model": {}},
     {"input_size": 64, "mean": (0.1, 0.2, 0.3), "std": (1.0, 1.0, 1.0)}),
])
def test_config_formats(tmp_path, document, expected):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(document))
    p = resolve_preprocessing(BASE, "default", PreprocessingOverrides(config=path)).preprocessing
    for name, value in expected.items():
        assert getattr(p, name) == pytest.approx(value), name


@pytest.mark.parametrize("document, message", [
    ({"pretrained_cfg": {"input_size": [3, 224, 192]}}, "not square"),
    ({"pretrained_cfg": {"crop_mode": "squash"}}, "crop_mode"),
    ({"pretrained_cfg": {"interpolation": "random"}}, "unknown interpolation"),
    ({"pretrained_cfg": {"crop_pct": 1.5}}, "crop_pct"),
    ({"pretrained_cfg": {"std": [0.2, 0.0, 0.2]}}, "std must be positive"),
    ({"pretrained_cfg": {"mean": [0.1, 0.2]}}, "1 or 3"),
    ({"architecture": "mixnet_s"}, "names no preprocessing"),
    ([1, 2, 3], "not an object"),
])
def test_bad_configs_are_refused_with_the_reason(tmp_path, document, message):
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(document))
    with pytest.raises(MixdeployError, match=message):
        resolve_preprocessing(BASE, "default", PreprocessingOverrides(config=path))


def test_unreadable_config_is_a_clear_error(tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text("{not json")
    with pytest.raises(MixdeployError, match="cannot read .* as a JSON config"):
        read_preprocess_config(path)


def test_timm_style_space_separated_mean_and_std_are_one_value():
    assert join_channel_values(["export", "m", "--mean", "0.5", "0.4", "0.3", "--std", "0.2", "--int8"]) == \
        ["export", "m", "--mean", "0.5,0.4,0.3", "--std", "0.2", "--int8"]
    assert join_channel_values(["--mean", "imagenet", "x"]) == ["--mean", "imagenet", "x"]


def test_timm_style_input_size_c_h_w_is_its_side():
    assert join_channel_values(["--input-size", "3", "224", "224", "--int8"]) == ["--input-size", "224", "--int8"]
    assert join_channel_values(["--input-size", "96"]) == ["--input-size", "96"]
    with pytest.raises(MixdeployError, match="3 224 224"):
        join_channel_values(["--input-size", "3", "224", "160"])     # not square: not a MixNet input


def test_checkpoint_without_preprocessing_is_flagged_as_a_guess(tmp_path):
    import torch

    from mixdeploy.models import create_model, load_model

    path = tmp_path / "plain.pt"
    torch.save(create_model("mixnet-s", num_classes=10).state_dict(), path)
    guessed = load_model("mixnet-s", weights=path)
    assert guessed.preprocessing_guesses() == ["input_size", "crop_pct", "interpolation", "mean", "std"]
    told = load_model("mixnet-s", weights=path, preprocessing=PreprocessingOverrides(
        input_size=224, crop_pct=1.0, interpolation="bilinear", mean=IMAGENET_MEAN, std=(0.229, 0.224, 0.225)))
    assert told.preprocessing_guesses() == []
    assert load_model("mixnet-s").preprocessing_guesses() == []   # no checkpoint: nothing to guess about


@pytest.fixture(scope="module")
def noise_npy(tmp_path_factory) -> str:
    """Images whose pixels span 0..255 in every image, so the input range follows mean/std exactly."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    images[:, 0, 0, :], images[:, 0, 1, :] = 0, 255
    path = tmp_path_factory.mktemp("noise") / "noise.npy"
    np.save(path, images)
    return str(path)


def test_export_flags_reach_calibration_parity_and_manifest(noise_npy, tmp_path, monkeypatch):
    from mixdeploy import data
    from mixdeploy.tflite.inspect import inspect_tflite

    seen, splits = [], []
    real_preprocess_image, real_load_images = data.preprocess_image, data.load_images

    def spy_image(image, preprocessing):
        seen.append(preprocessing)
        return real_preprocess_image(image, preprocessing)

    def spy_source(source, preprocessing, *args, **kwargs):
        splits.append(kwargs.get("split", "test"))
        return real_load_images(source, preprocessing, *args, **kwargs)

    monkeypatch.setattr(data, "preprocess_image", spy_image)
    monkeypatch.setattr(data, "load_images", spy_source)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [
        "export", "mixnet-s", "--num-classes", "10", "--input-size", "32", "--interpolation", "bilinear",
        "--crop-pct", "1.0", "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "--int8", "--lowering", "split",
        "--calib", noise_npy, "--calib-count", "8", "--parity-count", "8", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    told = {"input_size": 32, "crop_pct": 1.0, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.25] * 3}
    assert {k: manifest["preprocessing"][k] for k in told} == told
    assert manifest["preprocessing_sources"]["interpolation"] == "flag"
    # calibration (train split) and the parity summary (test split): 8 + 8 images, all with the flags
    assert set(splits) == {"train", "test"} and len(seen) >= 16
    assert all(p == Preprocessing.from_dict(manifest["preprocessing"]) for p in seen)
    # the int8 input range is what calibration saw: (0 - 0.5) / 0.25 .. (1 - 0.5) / 0.25 = [-2, 2]
    scale = inspect_tflite(out / "model_int8.tflite").inputs[0]["scale"]
    assert scale == pytest.approx(4.0 / 255.0, rel=1e-3)

    # parity reads the manifest's preprocessing, and its own flags win over it
    seen.clear()
    parity = CliRunner().invoke(cli, [
        "parity", "mixnet-s", "--num-classes", "10", "--tflite", str(out / "model_int8.tflite"), "--data", noise_npy,
        "--interpolation", "nearest", "--min-top1-agreement", "0", "--no-blame", "--json"])
    assert parity.exit_code == 0, parity.output
    used = json.loads(parity.stdout)["preprocessing"]
    assert used["interpolation"] == "nearest" and used["std"] == [0.25] * 3 and used["input_size"] == 32
    assert len(seen) >= 8 and all(p.interpolation == "nearest" and p.std == (0.25,) * 3 for p in seen)


def test_export_warns_when_a_checkpoint_names_no_preprocessing(tmp_path):
    import torch

    from mixdeploy.models import create_model

    path = tmp_path / "plain.pt"
    torch.save(create_model("mixnet-s", num_classes=10).state_dict(), path)
    result = CliRunner().invoke(cli, ["export", "mixnet-s", "--weights", str(path), "--input-size", "32",
                                      "--format", "onnx", "--lowering", "split", "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "names no preprocessing" in result.output and "--interpolation" in result.output
    assert "crop_pct, interpolation, mean, std" in result.output   # input_size came from a flag
