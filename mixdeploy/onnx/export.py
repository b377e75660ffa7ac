"""Export a PyTorch classifier to a clean, static-shape ONNX file.

Why the TorchScript exporter (`dynamo=False`): torch 2.13's dynamo exporter writes
opset 18 even when 17 is asked for; the TorchScript path gives a real opset 17, folds
eval-mode BatchNorm into the Conv right before it, and keeps module paths in node
names, which we turn into readable names like `blocks.2.0.conv_dw.1`.
"""

from __future__ import annotations

import collections
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import torch

from mixdeploy.atomic import write_bytes_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx.graph import op_histogram

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class OnnxExport:
    path: Path
    opset: int
    input_name: str
    output_name: str
    input_shape: list
    op_histogram: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    simplified: bool = True

    def to_dict(self) -> dict:
        return {"path": str(self.path), "opset": self.opset, "input_name": self.input_name,
                "output_name": self.output_name, "input_shape": self.input_shape,
                "op_histogram": self.op_histogram, "seconds": round(self.seconds, 3),
                "simplified": self.simplified}


def export_onnx(module: torch.nn.Module, input_size: int | tuple[int, int], path, opset: int = 17,
                dynamic_batch: bool = False, simplify: bool = True) -> OnnxExport:
    """Export `module` (eval mode) with a 1x3xHxW input, simplify with onnxsim, write atomically."""
    start = time.perf_counter()
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    model = _torch_export(module.eval(), (1, 3, int(h), int(w)), opset, dynamic_batch)
    if simplify:
        model = simplify_onnx(model)
    rename_nodes_by_module_path(model)
    onnx.checker.check_model(model)
    path = Path(path)
    write_bytes_atomic(path, model.SerializeToString())
    return OnnxExport(path=path, opset=opset, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                        input_shape=["N" if dynamic_batch else 1, 3, int(h), int(w)],
                        op_histogram=op_histogram(model), seconds=time.perf_counter() - start,
                        simplified=simplify)


def _torch_export(module, shape, opset, dynamic_batch) -> onnx.ModelProto:
    buffer = io.BytesIO()
    dynamic_axes = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            torch.onnx.export(module, torch.zeros(shape), buffer, opset_version=opset, dynamo=False,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes=dynamic_axes, do_constant_folding=True,
                              training=torch.onnx.TrainingMode.EVAL)
        except Exception as err:  # torch raises many types; the user needs the op and the cause
            raise MixdeployError(f"torch.onnx.export failed for {type(module).__name__}: {err}. "
                                 "Check that the model runs on a 1x3xHxW float tensor; try another --opset.") from err
    return onnx.load_from_string(buffer.getvalue())


def simplify_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxsim (constant folding, Identity/Constant chains gone, BN next to its Conv); the
    rewrite passes match on that form. A graph onnxsim cannot handle is returned unchanged."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception:  # onnxsim raises on graphs it cannot run (custom domains, ...): the converter will say why
        return model
    if not ok:  # onnxsim validates by running both graphs; a failed check keeps the original
        return model
    return simplified


def module_path_from_scope(node_name: str) -> tuple[str, str]:
    """'/blocks/blocks.2/blocks.2.0/conv_dw/conv_dw.1/Conv' -> ('blocks.2.0.conv_dw.1', 'Conv').

    The TorchScript exporter writes one scope per module, each named relative to its
    grandparent ('blocks', 'blocks.2', 'blocks.2.0'): a part that extends the previous
    one replaces it, any other part starts a new path component.
    """
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return "", node_name
    op = parts[-1]
    path: list[str] = []
    for part in parts[:-1]:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path), op


def rename_nodes_by_module_path(model: onnx.ModelProto) -> None:
    """Give nodes stable module-path names: a module's only Conv/Gemm gets the bare path
    (`blocks.2.0.conv_dw.1`), other nodes `path/Op` (`blocks.2.0.conv_dw/Split`)."""
    parsed = [module_path_from_scope(n.name) for n in model.graph.node]
    per_module_op = collections.Counter(parsed)
    seen: collections.Counter = collections.Counter()
    used: set[str] = set()
    for node, (path, op) in zip(model.graph.node, parsed):
        if not path:
            base = node.name or node.op_type
        elif node.op_type in ("Conv", "Gemm") and per_module_op[(path, op)] == 1:
            base = path
        else:
            base = f"{path}/{node.op_type}"
        seen[base] += 1
        name = base if seen[base] == 1 and base not in used else f"{base}_{seen[base] - 1}"
        while name in used:
            name += "_"
        used.add(name)
        node.name = name
