"""Shared helpers for the converter tests (no tests here).

Models are exported once per process (lru_cache) at 64x64 to keep the suite fast; the
reference for every conversion is onnxruntime on the same ONNX file.
"""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

WORKDIR = Path(tempfile.mkdtemp(prefix="mixdeploy-convert-tests-"))
SIZE = 64


@functools.lru_cache(maxsize=None)
def timm_onnx(name: str, size: int = SIZE, num_classes: int = 1000, simplify: bool = True) -> Path:
    """A timm model exported the way users do it: TorchScript exporter, opset 17, onnxsim (optional)."""
    import onnxsim
    import torch
    from timm_oracle import timm

    torch.manual_seed(0)
    module = timm.create_model(name, num_classes=num_classes).eval()
    path = WORKDIR / f"{name}_{size}{'' if simplify else '_raw'}.onnx"
    with torch.no_grad():
        torch.onnx.export(module, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"])
    if simplify:
        simplified, ok = onnxsim.simplify(onnx.load(str(path)))
        assert ok
        onnx.save(simplified, str(path))
    return path


def ort_run(model: onnx.ModelProto | Path, x_nchw: np.ndarray) -> np.ndarray:
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[None]})[0] for x in x_nchw])


def tflite_run(path, x: np.ndarray, layout: str = "nhwc") -> np.ndarray:
    """Run a .tflite one image at a time on NCHW float input; (de)quantizes int I/O."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    results = []
    for image in x:
        sample = np.transpose(image, (1, 2, 0)) if layout == "nhwc" and image.ndim == 3 else image
        sample = sample[None].astype(np.float32)
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            sample = np.clip(np.round(sample / scale + zero), info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], sample)
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        if result.ndim == 4 and layout == "nhwc":
            result = np.transpose(result, (0, 3, 1, 2))   # 4-D outputs come back NHWC
        results.append(result)
    return np.concatenate(results)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def real_images(size: int = SIZE, count: int = 2) -> np.ndarray:
    """Natural photos from scikit-image, ImageNet-normalized NCHW (random inputs hide layout bugs less well)."""
    from PIL import Image
    from skimage import data

    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()][:count]
    out = []
    for photo in photos:
        resized = np.asarray(Image.fromarray(photo).resize((size, size), Image.BICUBIC), np.float32) / 255
        out.append((resized.transpose(2, 0, 1) - mean) / std)
    return np.stack(out).astype(np.float32)


def onnx_ops(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def conv_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ---------------------------------------------------------------- small hand-built graphs

def graph(nodes, in_shape, out_shape, initializers=(), opset=17, name="g"):
    """A model of `nodes` with input x and output y; initializers as (name, array) pairs."""
    model = helper.make_model(
        helper.make_graph(list(nodes), name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers]),
        opset_imports=[helper.make_opsetid("", opset)])
    if out_shape is not None:   # the checker insists on a declared output shape
        onnx.checker.check_model(model, full_check=True)
    return model


def conv_model(group, cin, cout, k, stride=1, pads=None, dilation=1, size=12, seed=1):
    """One Conv with random weights and bias, input 1 x cin x size x size."""
    rng = np.random.default_rng(seed)
    pads = pads if pads is not None else [k // 2] * 4
    w = rng.standard_normal((cout, cin // group, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", group=group, kernel_shape=[k, k],
                            strides=[stride, stride], pads=pads, dilations=[dilation, dilation])
    return graph([node], [1, cin, size, size], None, [("w", w), ("b", b)])


def mixconv_graph():
    """conv -> split -> depthwise 3x3 / 7x7 -> concat: a minimal MixConv with one large kernel."""
    rng = np.random.default_rng(0)
    inits = {"w": rng.standard_normal((8, 3, 1, 1)).astype(np.float32),
             "w3": rng.standard_normal((4, 1, 3, 3)).astype(np.float32),
             "w7": rng.standard_normal((4, 1, 7, 7)).astype(np.float32) * 0.1,
             "sizes": np.array([4, 4], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="pw", kernel_shape=[1, 1]),
             helper.make_node("Split", ["c", "sizes"], ["a", "b"], name="split", axis=1),
             helper.make_node("Conv", ["a", "w3"], ["da"], name="dw3", group=4, kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Conv", ["b", "w7"], ["db"], name="dw7", group=4, kernel_shape=[7, 7], pads=[3] * 4),
             helper.make_node("Concat", ["da", "db"], ["y"], name="concat", axis=1)]
    return helper.make_model(helper.make_graph(
        nodes, "mixconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()]), opset_imports=[helper.make_opsetid("", 17)])


def float_weighted_ops(path) -> list[str]:
    """The convolutions and fully-connected ops whose weights are FLOAT32 (computed in float), each as
    the names of all its tensors joined (the output of the last op is renamed after the signature;
    its weights keep the layer's name)."""
    from mixdeploy.tflite.inspect import builtin_op_names, read_model, tensor_name, tensor_type_names

    model, _ = read_model(Path(path))
    names, types = builtin_op_names(), tensor_type_names()
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        weighted = names.get(max(code.builtinCode, code.deprecatedBuiltinCode)) in {
            "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
        if weighted and types.get(graph.tensors[op.inputs[1]].type) == "FLOAT32":
            found.append(" ".join(tensor_name(graph.tensors[i]) for i in [*op.outputs, *op.inputs] if i >= 0))
    return found


def assert_only_these_float(path, nodes: list[str]) -> None:
    """Each of `nodes` computes in float, and nothing else does but the first block's depthwise conv:
    with the stem float, the converter also leaves float the first block, whose depthwise conv and
    residual ADD read the stem's float output."""
    found = float_weighted_ops(path)
    for node in nodes:
        assert any(node in f for f in found), f"{node} is not float in {path}"
    allowed = (*nodes, "blocks.0.0.") if "conv_stem" in nodes else tuple(nodes)
    assert all(any(a in f for a in allowed) for f in found), found
