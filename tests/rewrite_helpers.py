"""Shared helpers for the ONNX export/rewrite tests (this file holds no tests itself).

The reference for every rewrite is onnxruntime running the graph before the rewrite.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RTOL = 1e-5


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    # The reference must be the graph as written, not ORT's own fused version of it.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(a).max())


def random_input(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def chelsea(size: int) -> np.ndarray:
    """scikit-image's cat photo, resized and ImageNet-normalized, 1x3xHxW."""
    from skimage import data, transform

    img = transform.resize(data.chelsea(), (size, size), anti_aliasing=True).astype(np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    return ((img - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def assert_same_function(before: onnx.ModelProto, after: onnx.ModelProto, inputs) -> None:
    onnx.checker.check_model(after)
    for x in inputs:
        ref, got = run_ort(before, x), run_ort(after, x)
        assert got.shape == ref.shape
        assert rel_err(ref, got) < RTOL, rel_err(ref, got)


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


class GraphBuilder:
    """Tiny onnx.helper wrapper for hand-built single-pass test graphs (NCHW float32)."""

    def __init__(self, channels: int, hw: int = 12, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.shape = [1, channels, hw, hw]
        self.count = 0

    def name(self, prefix):
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array, prefix="c"):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(f"{op.lower()}_out") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs if n_out > 1 else outs[0]

    def conv(self, x, cin, cout, k, group=1, stride=1, pads=None, bias=True):
        kh, kw = (k, k) if isinstance(k, int) else k
        w = self.const(self.rng.standard_normal((cout, cin // group, kh, kw)).astype(np.float32) * 0.3, "w")
        inputs = [x, w] + ([self.const(self.rng.standard_normal(cout).astype(np.float32), "b")] if bias else [])
        pads = pads if pads is not None else [kh // 2, kw // 2, kh // 2, kw // 2]
        return self.node("Conv", inputs, group=group, kernel_shape=[kh, kw], strides=[stride, stride], pads=pads)

    def batchnorm(self, x, c):
        r = self.rng
        params = [r.uniform(0.5, 2, c), r.standard_normal(c), r.standard_normal(c), r.uniform(0.5, 2, c)]
        return self.node("BatchNormalization", [x] + [self.const(p.astype(np.float32), "bn") for p in params],
                         epsilon=1e-3)

    def split(self, x, sizes):
        return self.node("Split", [x, self.const(np.array(sizes, np.int64), "split")], n_out=len(sizes), axis=1)

    def mixconv(self, x, sizes, kernels, stride=1, pads=None):
        parts = self.split(x, sizes)
        outs = [self.conv(p, c, c, k, group=c, stride=stride, pads=None if pads is None else pads[i])
                for i, (p, c, k) in enumerate(zip(parts, sizes, kernels))]
        return self.node("Concat", outs, axis=1)

    def model(self, output) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "test", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shape)],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, [None] * 4)], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        onnx.checker.check_model(model)
        return model
