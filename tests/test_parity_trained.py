"""The issue's parity targets on the committed checkpoint and the full Fashion-MNIST test set.

fp32 TFLite and ONNX must agree with PyTorch on >= 99.9% of top-1; full-integer int8 must lose
<= 0.5 points of top-1 and agree on >= 98.5%. All 10,000 test images, not a subset: at 98.5% a
2000-image subset moves by +-0.15 points with the lowering (3 images), the full set measures
the model (split lowering: 98.74%). The measured numbers are printed (pytest -s) and recorded
in docs/parity.md.
"""

from __future__ import annotations

import pytest

from mixdeploy import data, parity

IMAGES = 10_000  # the whole test split


@pytest.fixture(scope="module")
def result(trained_model, trained_artifacts):
    images = data.load_images("fashion-mnist", trained_model.preprocessing, limit=IMAGES)
    res = parity.run_parity(trained_model, [trained_artifacts.tflite_fp32, trained_artifacts.tflite_int8],
                            onnx_path=trained_artifacts.onnx, images=images,
                            thresholds=parity.Thresholds(min_top1_agreement=None, max_top1_drop=None))
    print()
    print(parity.to_markdown(res))
    return {m.backend: m for m in res.backends}, res


def test_reference_is_the_trained_model(result):
    _, res = result
    assert res.images == IMAGES
    assert res.reference.top1 > 0.5   # a trained classifier, not a random one (10% chance level)


@pytest.mark.parametrize("backend", ["onnx:model.onnx", "tflite:model_fp32.tflite"])
def test_float_backends_agree_with_pytorch(result, backend):
    metrics = result[0][backend]
    assert metrics.top1_agreement >= 0.999
    assert metrics.mean_cosine > 0.9999


def test_int8_meets_the_issue_thresholds(result):
    metrics = result[0]["tflite:model_int8.tflite"]
    print(f"int8: top-1 drop {metrics.top1_drop_points:.2f} points, agreement {metrics.top1_agreement * 100:.2f}%")
    assert metrics.top1_drop_points <= 0.5
    assert metrics.top1_agreement >= 0.985
