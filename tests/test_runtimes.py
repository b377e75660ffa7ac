"""mixdeploy.runtimes: one interface over PyTorch, onnxruntime and LiteRT, same logits for the same model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from mixdeploy import runtimes
from mixdeploy.errors import MixdeployError


@pytest.fixture(scope="module")
def sample(fashion_mnist_small):
    return fashion_mnist_small.images[:24]


@pytest.fixture(scope="module")
def torch_logits(trained_model, sample):
    return runtimes.TorchRunner(trained_model.module).run(sample, batch_size=8)


def test_onnxruntime_matches_pytorch(trained_artifacts, sample, torch_logits):
    # a fixed-batch (1) export: the runner feeds one image at a time
    logits = runtimes.make_runner(trained_artifacts.onnx).run(sample, batch_size=16)
    np.testing.assert_allclose(logits, torch_logits, rtol=1e-4, atol=1e-4)


def test_onnxruntime_dynamic_batch_runs_whole_batches(trained_artifacts, sample, torch_logits):
    model = onnx.load(str(trained_artifacts.onnx))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    runner = runtimes.OnnxRunner(model)
    assert runner.fixed_batch is None
    np.testing.assert_allclose(runner.run(sample, batch_size=10), torch_logits, rtol=1e-4, atol=1e-4)


def test_tflite_fp32_matches_pytorch_and_batching_does_not_change_results(trained_artifacts, sample, torch_logits):
    runner = runtimes.make_runner(trained_artifacts.tflite_fp32)
    assert runner.input_layout == "nhwc"
    batched = runner.run(sample, batch_size=7)      # 7 does not divide 24: a ragged last batch
    single = runtimes.TfliteRunner(trained_artifacts.tflite_fp32, num_threads=1).run(sample, batch_size=1)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batched, torch_logits, rtol=1e-3, atol=1e-3)


def test_tflite_int8_io_is_quantized_with_the_tensor_parameters(trained_artifacts, sample, torch_logits):
    runner = runtimes.TfliteRunner(trained_artifacts.tflite_int8)
    assert runner.input_dtype == np.int8
    logits = runner.run(sample, batch_size=8)
    # Independent path: drive LiteRT by hand, one image, quantizing as the TFLite spec says.
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(trained_artifacts.tflite_int8))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    x = sample[:1].transpose(0, 2, 3, 1)
    interp.set_tensor(inp["index"], np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8))
    interp.invoke()
    by_hand = (interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out
    np.testing.assert_allclose(logits[:1], by_hand, atol=s_out * 1.01)
    # and int8 logits stay close to float ones (cosine), i.e. no dequantization slip
    cos = np.sum(logits * torch_logits, 1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(torch_logits, axis=1)
    assert cos.mean() > 0.9


def test_make_runner_dispatch_and_errors(trained_model, tmp_path):
    assert isinstance(runtimes.make_runner(trained_model), runtimes.TorchRunner)
    assert isinstance(runtimes.make_runner(trained_model.module), runtimes.TorchRunner)
    with pytest.raises(MixdeployError, match=r"\.onnx or \.tflite"):
        runtimes.make_runner(tmp_path / "model.pb")
    with pytest.raises(MixdeployError, match="not found"):
        runtimes.make_runner(tmp_path / "missing.tflite")
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"garbage")
    with pytest.raises(MixdeployError, match="cannot load"):
        runtimes.make_runner(bad)


def test_tflite_runner_does_not_batch_a_graph_with_a_hard_coded_batch(tmp_path):
    """litert-torch writes Reshape([1, C]) before the classifier: resizing the input to a batch
    'works' but yields one row. The runner must notice and run image by image."""
    import tensorflow as tf

    from mixdeploy.runtimes import TfliteRunner

    weights = np.random.default_rng(0).standard_normal((48, 5)).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 3], tf.float32)])
    def fixed_batch(x):
        return tf.matmul(tf.reshape(x, [1, 48]), weights)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fixed_batch.get_concrete_function()], fixed_batch)
    path = tmp_path / "fixed_batch.tflite"
    path.write_bytes(converter.convert())
    images = np.random.default_rng(1).standard_normal((7, 3, 4, 4)).astype(np.float32)
    logits = TfliteRunner(path).run(images, batch_size=4)
    expected = images.transpose(0, 2, 3, 1).reshape(7, 48) @ weights
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_large_images_go_through_in_cache_sized_forwards():
    import torch

    assert runtimes.cache_sized_batch(64, (200, 3, 224, 224)) == 4
    assert runtimes.cache_sized_batch(64, (200, 3, 32, 32)) == 64       # the 32-px fixture: whole batches
    assert runtimes.cache_sized_batch(64, (2, 3, 2000, 2000)) == 1
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(len(x))
            return x.mean(dim=(2, 3)) * torch.arange(1, 4)

    images = np.random.default_rng(0).standard_normal((10, 3, 224, 224)).astype(np.float32)
    logits = runtimes.TorchRunner(Recorder()).run(images, batch_size=64)
    assert seen == [4, 4, 2]                      # in order, every image once
    np.testing.assert_allclose(logits, images.mean(axis=(2, 3)) * np.arange(1, 4), rtol=1e-5)


def test_cli_makes_openmp_threads_yield_unless_told_otherwise(monkeypatch):
    import cli

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    cli.threads_that_yield()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    cli.threads_that_yield()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_pytorch_reference_runs_one_thread_on_two_cores_and_leaves_the_count_as_it_was(monkeypatch):
    import torch

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert runtimes.default_torch_threads() == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert runtimes.default_torch_threads() == torch.get_num_threads()
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(torch.get_num_threads())
            return x.mean(dim=(2, 3))

    before = torch.get_num_threads()
    images = np.zeros((2, 3, 8, 8), np.float32)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    runtimes.TorchRunner(Recorder()).run(images)
    runtimes.TorchRunner(Recorder(), num_threads=3).run(images)     # asked for: obeyed
    assert seen == [1, 3]
    assert torch.get_num_threads() == before
