"""benchmarks/peers_lib and benchmarks/_accuracy_data.py: the peer int8 flows the accuracy and
speed benchmarks compare against, on the 32-px fixture checkpoint.

onnxruntime's quantize_static runs in this environment, so it is tested everywhere; the other
three peers live in venvs made by `bash benchmarks/setup_peers.sh` (not in CI) and their test
skips when the venv is absent.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402
import peers_lib  # noqa: E402
from peers_lib import common  # noqa: E402

VENV_PEERS = {"litert-torch": ".venv-litert-torch", "onnx2tf": ".venv-onnx2tf", "executorch": ".venv-executorch"}


@pytest.fixture(scope="module")
def calibration(trained_model, fashion_mnist_small):
    return accuracy_data.calibration_images(trained_model.preprocessing, draw=0, count=16)


def test_calibration_draws_are_fixed_distinct_and_checked():
    first = accuracy_data.calibration_indices(0, 64)
    assert np.array_equal(first, accuracy_data.calibration_indices(0, 64))  # the same draw everywhere
    assert len(np.unique(first)) == 64 and np.all(np.diff(first) > 0)
    assert first.min() >= 0 and first.max() < accuracy_data.TRAIN_IMAGES
    assert len(np.intersect1d(first, accuracy_data.calibration_indices(1, 64))) < 8  # draws differ
    with pytest.raises(ValueError, match="count"):
        accuracy_data.calibration_indices(64, 0)  # (count, draw) swapped: refused, not an empty draw


def test_calibration_images_are_those_train_images_preprocessed(trained_model, fashion_mnist_small):
    from mixdeploy import data

    images = accuracy_data.calibration_images(trained_model.preprocessing, draw=2, count=5)
    raw, _ = data.load_fashion_mnist_raw("train")
    expected = data.preprocess_arrays(raw[accuracy_data.calibration_indices(2, 5)], trained_model.preprocessing)
    assert images.shape == (5, 3, trained_model.preprocessing.input_size, trained_model.preprocessing.input_size)
    np.testing.assert_array_equal(images, expected)


@pytest.mark.slow  # ~50 s on the shared 2-core machine, most of it the peer's own ONNX export
def test_onnxruntime_qdq_is_per_channel_int8_and_keeps_the_answers(trained_checkpoint, trained_model,
                                                                   fashion_mnist_small, calibration, tmp_path):
    evaluation = accuracy_data.eval_set(trained_model, 100)
    path = peers_lib.convert_int8("onnxruntime-qdq", trained_checkpoint, calibration, tmp_path)
    model = onnx.load(str(path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    initializers = {t.name: t for t in model.graph.initializer}
    weight_scales = [initializers[n.input[1]] for n in model.graph.node
                     if n.op_type == "DequantizeLinear" and n.input[0] in initializers
                     and initializers[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weight_scales and any(np.prod(s.dims) > 1 for s in weight_scales)  # per-channel weight scales

    logits = peers_lib.run_logits("onnxruntime-qdq", path, evaluation.images)
    metrics = accuracy_data.metrics(evaluation, logits, "onnxruntime-qdq")
    assert metrics.top1_agreement > 0.8 and metrics.mean_cosine > 0.95  # int8, not a broken graph
    assert metrics.max_abs_error > 0  # really quantized: not the float model back
    facts = peers_lib.read_facts(path)
    assert facts["calibration_images"] == len(calibration) and facts["file_bytes"] == path.stat().st_size


def test_a_missing_peer_venv_is_a_reason_not_a_traceback(trained_checkpoint, calibration, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "VENV_ROOT", tmp_path)  # a checkout without the peer venvs
    with pytest.raises(peers_lib.PeerError, match="setup_peers.sh"):
        peers_lib.convert_int8("executorch", trained_checkpoint, calibration, tmp_path / "out")
    with pytest.raises(peers_lib.PeerError, match="unknown peer"):
        peers_lib.convert_int8("tvm", trained_checkpoint, calibration, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("peer", list(VENV_PEERS))
def test_venv_peer_int8_keeps_the_answers(peer, trained_checkpoint, trained_model, fashion_mnist_small,
                                          calibration, tmp_path):
    if not (common.venv_dir(VENV_PEERS[peer]) / "bin" / "python").exists():
        pytest.skip(f"{VENV_PEERS[peer]}/ absent: bash benchmarks/setup_peers.sh")
    evaluation = accuracy_data.eval_set(trained_model, 100)
    path = peers_lib.convert_int8(peer, trained_checkpoint, calibration, tmp_path)
    logits = peers_lib.run_logits(peer, path, evaluation.images)
    metrics = accuracy_data.metrics(evaluation, logits, peer)
    # Loose: each tool's own int8 on a 32-px model; what this catches is a driver feeding the
    # wrong layout or normalization (agreement near chance, cosine far from 1).
    assert metrics.top1_agreement > 0.6 and metrics.mean_cosine > 0.8
    assert 0 < metrics.max_abs_error
