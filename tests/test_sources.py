"""load_model: names, checkpoint formats, metadata, and the errors a user can cause."""

import builtins

import pytest
import torch
from timm_oracle import timm

from mixdeploy.errors import MixdeployError
from mixdeploy.models import create_model, list_models, load_model, save_checkpoint
from mixdeploy.preprocess import Preprocessing


@pytest.fixture(scope="module")
def timm_mixnet_s_10():
    """An independent state dict: timm's mixnet_s with 10 classes."""
    return timm.create_model("mixnet_s", num_classes=10).eval()


def _logits(module, seed=0):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return module.eval()(x)


# ---------------------------------------------------------------- names

def test_registry_lists_all_six_models():
    assert list_models() == ["mixnet-s", "mixnet-m", "mixnet-l", "tf-mixnet-s", "tf-mixnet-m", "tf-mixnet-l"]


@pytest.mark.parametrize("alias", ["mixnet_s", "MixNet-S", "mixnet-s"])
def test_aliases_resolve_and_model_is_in_eval_mode(alias):
    loaded = load_model(alias)
    assert loaded.name == "mixnet-s" and loaded.source == alias
    assert not loaded.module.training
    assert loaded.weights_sha256 is None and loaded.num_classes == 1000
    assert loaded.preprocessing == Preprocessing(input_size=224, crop_pct=0.875, interpolation="bicubic")


def test_input_size_override():
    assert load_model("tf_mixnet_m", input_size=160).preprocessing.input_size == 160


def test_unknown_model_lists_known_names():
    with pytest.raises(MixdeployError) as err:
        load_model("mixnet-xs")
    message = str(err.value)
    assert "unknown model 'mixnet-xs'" in message
    for name in list_models():
        assert name in message
    assert err.value.exit_code == 2


def test_kernel_mix_counts_depthwise_channels():
    mix = load_model("mixnet-s").kernel_mix
    assert set(mix) == {3, 5, 7, 9, 11}
    assert set(load_model("mixnet-m").kernel_mix) == {3, 5, 7, 9}
    # total = channels of every depthwise conv, counted independently from the module tree
    model = create_model("mixnet-s")
    dw_channels = sum(m.in_channels for m in model.modules()
                      if isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels)
    assert sum(mix.values()) == dw_channels


# ---------------------------------------------------------------- checkpoint formats

@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module_prefix"])
def test_timm_state_dict_loads_in_any_wrapping(tmp_path, timm_mixnet_s_10, wrap):
    sd = timm_mixnet_s_10.state_dict()
    payload = {"bare": sd, "state_dict": {"state_dict": sd, "epoch": 3}, "model": {"model": sd},
               "module_prefix": {f"module.{k}": v for k, v in sd.items()}}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    loaded = load_model("mixnet-s", weights=path)
    assert loaded.num_classes == 10  # inferred from the classifier shape
    assert len(loaded.weights_sha256) == 64
    torch.testing.assert_close(_logits(loaded.module), _logits(timm_mixnet_s_10), rtol=1e-5, atol=1e-5)


def test_ema_weights_are_preferred(tmp_path, timm_mixnet_s_10):
    sd = timm_mixnet_s_10.state_dict()
    other = {k: torch.zeros_like(v) if k == "classifier.bias" else v for k, v in sd.items()}
    sd_ema = {k: v.clone() for k, v in sd.items()}
    sd_ema["classifier.bias"] = torch.full_like(sd["classifier.bias"], 7.0)
    torch.save({"state_dict": other, "state_dict_ema": sd_ema}, tmp_path / "c.pth")
    loaded = load_model("mixnet-s", weights=tmp_path / "c.pth")
    assert torch.all(loaded.module.classifier.bias == 7.0)


def test_safetensors_checkpoint(tmp_path, timm_mixnet_s_10):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in timm_mixnet_s_10.state_dict().items()}, tmp_path / "model.safetensors")
    loaded = load_model("mixnet-s", weights=tmp_path / "model.safetensors")
    torch.testing.assert_close(_logits(loaded.module), _logits(timm_mixnet_s_10), rtol=1e-5, atol=1e-5)


def test_fp16_checkpoint_with_metadata_is_a_source_by_itself(tmp_path, timm_mixnet_s_10):
    prep = Preprocessing(input_size=64, crop_pct=1.0, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    path = save_checkpoint(tmp_path / "fmnist.pt", timm_mixnet_s_10, model="mixnet_s", num_classes=10,
                           preprocessing=prep, half=True)
    raw = torch.load(path, weights_only=True)
    assert raw["state_dict"]["conv_stem.weight"].dtype == torch.float16
    loaded = load_model(str(path))
    assert loaded.name == "mixnet-s" and loaded.num_classes == 10 and loaded.preprocessing == prep
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    # fp16 storage: close to the float32 original, not identical
    torch.testing.assert_close(_logits(loaded.module), _logits(timm_mixnet_s_10), rtol=0.05, atol=0.05)
    # the same file with the model named explicitly
    assert load_model("mixnet-s", weights=path).preprocessing == prep


def test_bundled_checkpoint_by_name(tmp_path, monkeypatch, timm_mixnet_s_10):
    from mixdeploy.models import sources

    save_checkpoint(tmp_path / "mixnet_s_toy.pt", timm_mixnet_s_10, model="mixnet-s", num_classes=10,
                    extra={"class_names": [str(i) for i in range(10)]})
    monkeypatch.setattr(sources, "WEIGHTS_DIR", tmp_path)
    loaded = load_model("mixnet-s-toy")
    assert loaded.name == "mixnet-s" and loaded.num_classes == 10 and loaded.class_names[3] == "3"
    assert loaded.weights_path == str(tmp_path / "mixnet_s_toy.pt")
    torch.testing.assert_close(_logits(loaded.module), _logits(timm_mixnet_s_10))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", create_model("mixnet-m", 5), model="mixnet-m")
    with pytest.raises(MixdeployError, match="saved from 'mixnet-m', not 'mixnet-s'"):
        load_model("mixnet-s", weights=path)


def test_bare_state_dict_as_source_needs_a_model_name(tmp_path, timm_mixnet_s_10):
    torch.save(timm_mixnet_s_10.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(MixdeployError, match="carries no mixdeploy metadata"):
        load_model(str(tmp_path / "bare.pt"))


def test_explicit_num_classes_wins_and_mismatch_is_reported(tmp_path, timm_mixnet_s_10):
    torch.save(timm_mixnet_s_10.state_dict(), tmp_path / "c.pt")
    with pytest.raises(MixdeployError) as err:
        load_model("mixnet-s", weights=tmp_path / "c.pt", num_classes=1000)
    message = str(err.value)
    assert "2 shape mismatch" in message and "classifier.weight (10, 1536) vs (1000, 1536)" in message


# ---------------------------------------------------------------- errors

def test_missing_weights_file(tmp_path):
    with pytest.raises(MixdeployError, match="weights file not found: .*nope.pth"):
        load_model("mixnet-s", weights=tmp_path / "nope.pth")


def test_corrupt_weights_file(tmp_path, timm_mixnet_s_10):
    path = tmp_path / "broken.pth"
    torch.save(timm_mixnet_s_10.state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])  # truncated download
    with pytest.raises(MixdeployError, match="cannot read .*broken.pth as a PyTorch checkpoint.*corrupt"):
        load_model("mixnet-s", weights=path)


def test_not_a_checkpoint_at_all(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(MixdeployError, match="cannot read"):
        load_model("mixnet-s", weights=path)


def test_mismatched_keys_are_named_and_counted(tmp_path):
    torch.save(create_model("mixnet-m").state_dict(), tmp_path / "m.pt")
    with pytest.raises(MixdeployError) as err:
        load_model("mixnet-s", weights=tmp_path / "m.pt")
    message = str(err.value)
    mixnet_s_keys, mixnet_m_keys = (set(create_model(n).state_dict()) for n in ("mixnet-s", "mixnet-m"))
    n_missing = len(mixnet_s_keys - mixnet_m_keys)
    n_unexpected = len(mixnet_m_keys - mixnet_s_keys)
    assert f"{n_missing} missing" in message and f"{n_unexpected} unexpected" in message
    assert "shape mismatch" in message and "conv_stem.weight" in message
    assert message.count(", ") < 60  # lists are capped, not thousands of keys
    assert "mixnet-s vs mixnet-m" in message


def test_state_dict_with_foreign_keys(tmp_path):
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(MixdeployError, match=r"1 unexpected: encoder.weight"):
        load_model("mixnet-s", weights=tmp_path / "x.pt")


# ---------------------------------------------------------------- timm models

def test_timm_model_by_name():
    loaded = load_model("timm:mixnet_s", num_classes=7)
    assert type(loaded.module).__module__.startswith("timm.")
    assert loaded.num_classes == 7 and loaded.preprocessing.input_size == 224
    assert loaded.params == sum(p.numel() for p in timm.create_model("mixnet_s", num_classes=7).parameters())


def test_timm_unknown_name():
    with pytest.raises(MixdeployError, match="timm has no model 'mixnet_zz'"):
        load_model("timm:mixnet_zz")


def test_timm_with_broken_torchvision_explains_the_fix(monkeypatch):
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "timm":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(MixdeployError) as err:
        load_model("timm:mixnet_s")
    message = str(err.value)
    assert "pip install -c scripts/test-constraints.txt timm" in message
    assert "torchvision" in message and "CPU" in message
