"""Uniform batch runners: NCHW float32 images in, (N, classes) float32 logits out.

One interface for PyTorch, onnxruntime and LiteRT so parity compares like with like:
every runner takes the same preprocessed NCHW tensors; layout (NHWC for TFLite) and
integer I/O (quantize with the input tensor's scale/zero point, dequantize the output)
are the runner's business, not the caller's.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from mixdeploy.errors import MixdeployError

ProgressFn = Callable[[int], None]  # called with the number of images just finished


class Runner(Protocol):
    name: str

    def run(self, images_nchw: np.ndarray, batch_size: int = 64, progress: ProgressFn | None = None) -> np.ndarray:
        ...


# Images per forward pass, at most: at 224 px a batch of 64 MixNet-S activations (~50 MB for one
# layer) spills out of the CPU caches. Measured in one interleaved run (64 images at 224, 1 thread,
# a loaded 2-core EPYC): PyTorch 4 images per forward 19.6 ms/image, 64 per forward 78.9 (4.0x);
# LiteRT fp32 1 per forward 9.0, 4: 9.4, 64: 15.3 (1.7x); int8 4.4 vs 5.0. Small images (the 32-px
# fixture) keep whole batches.
PIXELS_PER_FORWARD = 4 * 224 * 224


def cache_sized_batch(batch_size: int, shape) -> int:
    """`batch_size`, cut so one forward pass holds at most PIXELS_PER_FORWARD input pixels
    (`shape`: the images' N, C, H, W)."""
    pixels = int(shape[-1]) * int(shape[-2]) if len(shape) == 4 else 1
    return max(1, min(batch_size, PIXELS_PER_FORWARD // max(1, pixels)))


def _batches(n: int, batch_size: int):
    for start in range(0, n, max(1, batch_size)):
        yield start, min(n, start + max(1, batch_size))


class TorchRunner:
    """The reference: a torch module in eval mode, float32 on CPU."""

    def __init__(self, module, name: str = "pytorch", num_threads: int | None = None):
        self.module = module.eval()
        self.name = name
        self.num_threads = num_threads or default_torch_threads()

    def run(self, images_nchw, batch_size=64, progress=None):
        import torch

        outputs = []
        with torch_threads(self.num_threads), torch.inference_mode():
            for start, end in _batches(len(images_nchw), cache_sized_batch(batch_size, images_nchw.shape)):
                batch = torch.from_numpy(np.ascontiguousarray(images_nchw[start:end], dtype=np.float32))
                outputs.append(self.module(batch).float().numpy())
                if progress:
                    progress(end - start)
        return np.concatenate(outputs).astype(np.float32)


@contextmanager
def torch_threads(count: int):
    """PyTorch at `count` threads inside the block; the process's previous count restored after
    (torch.set_num_threads is global: a runner must not change it for the rest of the process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def default_torch_threads() -> int:
    """PyTorch's thread count for the reference when none is asked for: one on a machine of two
    cores or fewer. Measured there (MixNet-S at 224, 4 images per forward, ms per image): 1 thread
    49-60 in every case; 2 threads 44 idle with spinning OpenMP threads but 150-330 with another
    process busy, and with threads that sleep (OMP_WAIT_POLICY=PASSIVE, the CLI's setting) 77 busy
    and 128 idle (each op wakes the sleeping thread). Larger machines keep PyTorch's default."""
    import torch

    cores = os.cpu_count() or 1
    return 1 if cores <= 2 else torch.get_num_threads()


class OnnxRunner:
    """onnxruntime; whole batches when the model's batch dimension is dynamic, else one image at a time."""

    def __init__(self, model, name: str = "onnxruntime", num_threads: int | None = None):
        import onnx
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        payload = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        if not isinstance(model, onnx.ModelProto) and not Path(model).is_file():
            raise MixdeployError(f"ONNX file not found: {model}")
        try:
            self.session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own Fail/InvalidGraph types
            raise MixdeployError(f"onnxruntime cannot load {'the model' if isinstance(model, onnx.ModelProto) else model}: "
                                 f"{str(err).splitlines()[0][:300]}; re-export it with `mixdeploy export`") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.fixed_batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else None
        self.name = name

    def run(self, images_nchw, batch_size=64, progress=None):
        step = self.fixed_batch or batch_size
        outputs = []
        for start, end in _batches(len(images_nchw), step):
            batch = np.ascontiguousarray(images_nchw[start:end], dtype=np.float32)
            if self.fixed_batch and len(batch) != self.fixed_batch:
                # last partial batch of a fixed-batch model: pad, run, drop the padding
                batch = np.concatenate([batch, np.repeat(batch[-1:], self.fixed_batch - len(batch), 0)])
            outputs.append(self.session.run(None, {self.input_name: batch})[0][: end - start])
            if progress:
                progress(end - start)
        return np.concatenate(outputs).astype(np.float32).reshape(len(images_nchw), -1)


def quantize_for_input(values: np.ndarray, details: dict) -> np.ndarray:
    """Float values -> a TFLite input's dtype (int8/int16 via its scale / zero point)."""
    dtype = np.dtype(details["dtype"])
    if dtype.kind == "f":
        return values.astype(dtype)
    scale, zero_point = details["quantization"]
    if not scale:
        raise MixdeployError(f"input {details['name']} is {dtype} without a quantization scale: "
                             f"cannot feed it float data")
    info = np.iinfo(dtype)
    return np.clip(np.rint(values / scale + zero_point), info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, details: dict) -> np.ndarray:
    """A TFLite output's values -> float32 (int8/int16 via its scale / zero point). The one
    dequantize: host runs, phone and ARM64-twin outputs all go through it."""
    scale, zero_point = details["quantization"]
    if np.dtype(details["dtype"]).kind in "iu" and scale:
        return (values.astype(np.float32) - zero_point) * np.float32(scale)
    return values.astype(np.float32)


def default_tflite_threads() -> int:
    """LiteRT's thread count when none is asked for (XNNPACK gains little past 4 threads)."""
    return min(4, os.cpu_count() or 1)


class TfliteRunner:
    """LiteRT interpreter (XNNPACK) over a .tflite; NCHW in, NHWC to the model; int8/int16 I/O handled."""

    def __init__(self, path, name: str | None = None, num_threads: int | None = None, input_layout: str | None = None):
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if not path.is_file():
            raise MixdeployError(f"TFLite file not found: {path}")
        self.path = path
        self.name = name or f"tflite:{path.name}"
        self.num_threads = num_threads or default_tflite_threads()
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=self.num_threads)
            self.interpreter.allocate_tensors()   # a damaged graph (bad tensor index, op) fails here, not mid-run
        except Exception as err:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
            raise MixdeployError(f"LiteRT cannot load {path}: {_first_line(err)}; convert it again") from None
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self.input_layout = input_layout or self._guess_layout(self._input["shape"])
        self._allocated_batch = None

    @staticmethod
    def _guess_layout(shape) -> str:
        # Our converter declares NHWC inputs by default; a 3-wide axis 1 means NCHW was kept.
        return "nchw" if len(shape) == 4 and shape[1] == 3 and shape[3] != 3 else "nhwc"

    @property
    def input_dtype(self):
        return self._input["dtype"]

    def _resize(self, batch: int) -> None:
        """Batch when the interpreter allows it; a model that refuses stays at its own batch size."""
        if self._allocated_batch == batch:
            return
        shape = list(self._input["shape"])
        shape[0] = batch
        try:
            self.interpreter.resize_tensor_input(self._input["index"], shape, strict=False)
            self.interpreter.allocate_tensors()
            # A graph with a hard-coded batch (e.g. Reshape to [1, C] before the classifier,
            # as litert-torch writes) accepts the resize but still yields one row: not batchable.
            output_batch = int(self.interpreter.get_output_details()[0]["shape"][0])
            if output_batch != batch:
                raise ValueError(f"output batch {output_batch} != input batch {batch}")
        except Exception:  # noqa: BLE001 — fall back to the model's native batch
            shape[0] = int(self._input["shape"][0])
            self.interpreter.resize_tensor_input(self._input["index"], shape)
            self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]
        self._allocated_batch = int(self._input["shape"][0])

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        return quantize_for_input(x, self._input)

    def run(self, images_nchw, batch_size=64, progress=None):
        images = images_nchw.transpose(0, 2, 3, 1) if self.input_layout == "nhwc" else images_nchw
        outputs = []
        for start, end in _batches(len(images), cache_sized_batch(batch_size, images_nchw.shape)):
            self._resize(end - start)
            step = self._allocated_batch
            for sub in range(start, end, step):
                chunk = images[sub:min(end, sub + step)]
                try:
                    self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(self._quantize_input(chunk)))
                    self.interpreter.invoke()
                except (ValueError, RuntimeError) as err:   # input shape vs the model's, a kernel refusing
                    raise MixdeployError(f"LiteRT cannot run {self.path} on inputs of shape {tuple(chunk.shape)}: "
                                         f"{_first_line(err)}") from None
                out = self.interpreter.get_tensor(self._output["index"])
                outputs.append(dequantize(out, self._output)[: len(chunk)].copy())
            if progress:
                progress(end - start)
        return np.concatenate(outputs).reshape(len(images), -1)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def make_runner(target, name: str | None = None, num_threads: int | None = None) -> Runner:
    """A runner for a torch module, a LoadedModel, an onnx.ModelProto, or a .onnx/.tflite path."""
    import onnx

    if hasattr(target, "module") and hasattr(target, "preprocessing"):  # LoadedModel
        if target.module is None:  # an ONNX source: its reference is onnxruntime on the original file
            return OnnxRunner(target.onnx_path, name=name or f"onnxruntime:{Path(target.onnx_path).name}",
                              num_threads=num_threads)
        return TorchRunner(target.module, name=name or "pytorch", num_threads=num_threads)
    if isinstance(target, onnx.ModelProto):
        return OnnxRunner(target, name=name or "onnxruntime", num_threads=num_threads)
    if isinstance(target, (str, os.PathLike)):
        suffix = Path(target).suffix.lower()
        if suffix == ".onnx":
            return OnnxRunner(target, name=name or f"onnx:{Path(target).name}", num_threads=num_threads)
        if suffix == ".tflite":
            return TfliteRunner(target, name=name, num_threads=num_threads)
        raise MixdeployError(f"cannot run {target}: expected a .onnx or .tflite file")
    try:
        import torch

        if isinstance(target, torch.nn.Module):
            return TorchRunner(target, name=name or "pytorch", num_threads=num_threads)
    except ImportError:
        pass
    raise MixdeployError(f"cannot make a runner for {type(target).__name__}")
