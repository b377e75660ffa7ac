"""The int8 experiments behind docs/accuracy.md's "Measured and not adopted" rows:
benchmarks/equalization.py (residual-stream equalization), benchmarks/stem_projection.py (the stem
projected onto grey inputs), benchmarks/qat_distill.py (distilled quantization-aware
fine-tuning) and benchmarks/keep_float.py (fixed layers left in float). What each measures rests
on these properties."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import equalization  # noqa: E402
import keep_float  # noqa: E402
import qat_distill  # noqa: E402
import stem_projection  # noqa: E402

from convert_support import assert_only_these_float  # noqa: E402
from mixdeploy.models import create_model  # noqa: E402


def logits(model, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images)).numpy()


def random_images(n: int = 8, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)


@pytest.mark.parametrize("name", ["mixnet-s", "tf-mixnet-s"])   # ReLU + swish stages; TF 'same' padding
def test_equalization_keeps_the_function_and_evens_the_stream_ranges(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    segments = equalization.stream_segments(model)
    with torch.no_grad():                              # give every stream channel its own range
        for bn in (bn for seg in segments for bn in seg["producers"]):
            bn.weight.uniform_(0.2, 3.0)
    images = random_images()
    before = logits(model, images)
    spread_before = [equalization.spread(r) for r in equalization.channel_ranges(model, segments, images)]
    equalization.equalize(model, images, alpha=1.0, clip=1e3)
    after = logits(model, images)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * np.abs(before).max())
    spread_after = [equalization.spread(r) for r in equalization.channel_ranges(model, segments, images)]
    assert max(spread_before) > 1.5
    assert max(spread_after) < 1.01                    # alpha 1, no clip: every channel at the same range


def test_equalization_scales_are_clipped_and_centred():
    ranges = torch.tensor([1.0, 2.0, 4.0, 1000.0])
    conv = torch.nn.Conv2d(4, 3, 1, bias=False)
    scales = equalization.stream_scales(ranges, [conv], alpha=1.0, clip=4.0)
    # 1 / range over its geometric mean: 9.46, 4.73, 2.36, 0.0095 -> clipped to [1/4, 4]
    np.testing.assert_allclose(scales.numpy(), [4.0, 4.0, 2.3644, 0.25], rtol=1e-3)


@pytest.mark.parametrize("name", ["mixnet-s", "tf-mixnet-s"])   # zero pads; TF 'same' (asymmetric) pads
def test_the_stem_projection_is_exact_on_grey_inputs_only(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    rng = np.random.default_rng(1)
    grey = rng.uniform(0, 1, (6, 1, 32, 32))
    grey_images = ((grey - mean[:, None, None]) / std[:, None, None]).astype(np.float32)   # N,3,S,S
    colour_images = ((rng.uniform(0, 1, (6, 3, 32, 32)) - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    grey_before, colour_before = logits(model, grey_images), logits(model, colour_images)
    stem = model.conv_stem
    weights_before = stem.weight.detach().clone()
    d = stem_projection.blind_direction(mean, std)
    assert stem_projection.blind_fraction(stem, d) > 0.3          # random init puts weight there
    stem_projection.project_stem(stem, d)
    assert stem_projection.blind_fraction(stem, d) < 1e-6
    assert stem_projection.stem_scale_ratio(weights_before, stem.weight) < 0.95
    np.testing.assert_allclose(logits(model, grey_images), grey_before, rtol=1e-4, atol=1e-4 * np.abs(grey_before).max())
    colour_change = np.abs(logits(model, colour_images) - colour_before).max()
    assert colour_change > 1e-2 * np.abs(colour_before).max()     # not a no-op: colour inputs see d


def test_the_stem_projection_takes_only_a_three_channel_dense_stem():
    with pytest.raises(ValueError, match="3 input channels"):
        stem_projection.project_stem(torch.nn.Conv2d(4, 8, 3), np.ones(3) / np.sqrt(3))


def test_the_simulation_is_float_when_off_and_int8_when_on(trained_model, fashion_mnist_small):
    images = fashion_mnist_small.images[:32]
    reference = logits(trained_model.module, images)
    student, sim = copy.deepcopy(trained_model.module).eval(), qat_distill.Int8Simulation()
    qat_distill.instrument(student, sim)
    np.testing.assert_allclose(logits(student, images), reference, rtol=1e-5, atol=1e-5)   # off: the float model

    qat_distill.observe(student, sim, images)
    assert sim.mode == "quantize" and len(sim.ranges) > 100      # every tensor of the int8 graph has a range
    simulated = logits(student, images)
    cosine = (simulated * reference).sum(1) / np.linalg.norm(simulated, axis=1) / np.linalg.norm(reference, axis=1)
    assert 0.9 < cosine.mean() < 0.99999                          # quantized: close, not equal
    low, high = sim.ranges["logits"]                              # the logits sit on that range's int8 grid
    steps = simulated / ((high - low) / 255)                      # (q - zero point) for integers q and zero point
    assert np.abs(steps - np.round(steps)).max() < 1e-2 and steps.max() - steps.min() <= 255.01


def test_the_simulation_passes_gradients_to_every_conv(trained_model, fashion_mnist_small):
    images = fashion_mnist_small.images[:8]
    student, sim = copy.deepcopy(trained_model.module).eval(), qat_distill.Int8Simulation()
    qat_distill.instrument(student, sim)
    qat_distill.observe(student, sim, images)
    student(torch.from_numpy(images)).square().mean().backward()
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in convs)


@pytest.mark.parametrize("variant", sorted(keep_float.VARIANTS))
def test_each_keep_float_variant_names_real_nodes_and_leaves_only_them_float(variant, trained_model, trained_artifacts,
                                                                             fashion_mnist_small, tmp_path):
    """The variants' node names exist in an exported MixNet (convert_onnx refuses unknown ones), the
    model they build keeps its function, and only the named convs compute in float."""
    import onnx

    from mixdeploy.tflite.inspect import inspect_tflite

    nodes, io_dtype = keep_float.VARIANTS[variant]
    evaluation = keep_float.accuracy_data.EvalSet(images=fashion_mnist_small.images[:64],
                                                 labels=fashion_mnist_small.labels[:64],
                                                 reference=logits(trained_model.module, fashion_mnist_small.images[:64]))
    path = tmp_path / f"{variant}.tflite"
    row = keep_float.convert_and_judge(onnx.load(str(trained_artifacts.onnx_opt)), nodes, io_dtype,
                                       trained_artifacts.calibration, evaluation, path)
    assert row["top1_agreement"] >= 0.95 and row["mean_cosine"] > 0.99
    inspection = inspect_tflite(path)
    assert inspection.inputs[0]["dtype"] == io_dtype and inspection.outputs[0]["dtype"] == io_dtype
    assert_only_these_float(path, nodes)

