"""Which op of the model each row of benchmark_model's op profile timed.

Rows come in two kinds (tensorflow/lite/profiling/profile_summarizer.cc):
- ops the interpreter ran itself: `[out_tensor, ...]:NODE` (the TFLite node index and its
  output tensor names, which carry the ONNX node scopes, e.g. `blocks.2.0.conv_dw.1/BiasAdd`);
- ops inside an XNNPACK partition: `Delegate/OPERATOR:I`, node type OPERATOR, e.g. `Convolution
  (NHWC, QC8) DWConv` (operator, layout, datatype, microkernel) and I its index in the partition's
  runtime. They name no tensor. The partition itself is a `TfLiteXNNPackDelegate` row whose time
  is the sum of its operators' (skipped here: counted once).

The XNNPACK rows are matched to the model's delegated ops (every op not in a row of the first
kind), in execution order: convolutions and fully-connected ops are anchors (XNNPACK never fuses
or drops one, so their counts must agree), and the ops between two anchors are matched by kind
(difflib), since XNNPACK fuses some (a Pad into the Convolution after it) and names others in
its own words. A row left unmatched between two anchors of the same layer still belongs to it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from mixdeploy.bench.parse import OpProfileRow
from mixdeploy.errors import MixdeployError

_DELEGATE_ROW = re.compile(r"^Delegate/(.+):(\d+)$")
_NAMED_ROW = re.compile(r"^\[(.*)\]:(\d+)$")
ANCHORS = ("conv", "fc")
# XNNPACK operator name (before " (") -> kind; the TFLite builtin -> the same kinds.
XNNPACK_KINDS = {
    "convolution": "conv", "depthwise convolution": "conv", "deconvolution": "conv", "fully connected": "fc",
    "add": "add", "multiply": "mul", "subtract": "sub", "sigmoid": "sigmoid", "constant pad": "pad",
    "slice": "slice", "even split": "split", "split": "split", "concatenate": "concat", "concatenation": "concat",
    "mean": "mean", "global average pooling": "mean", "convert": "convert", "clamp": "clamp",
    "hardswish": "hardswish", "softmax": "softmax", "copy": "copy", "max pooling": "maxpool",
    "average pooling": "avgpool",
}
TFLITE_KINDS = {
    "CONV_2D": "conv", "DEPTHWISE_CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "FULLY_CONNECTED": "fc",
    "ADD": "add", "MUL": "mul", "SUB": "sub", "LOGISTIC": "sigmoid", "PAD": "pad", "PADV2": "pad",
    "STRIDED_SLICE": "slice", "SLICE": "slice", "SPLIT": "split", "SPLIT_V": "split",
    "CONCATENATION": "concat", "MEAN": "mean", "QUANTIZE": "convert", "DEQUANTIZE": "convert",
    "RELU": "clamp", "RELU6": "clamp", "HARD_SWISH": "hardswish", "SOFTMAX": "softmax", "RESHAPE": "copy",
    "MAX_POOL_2D": "maxpool", "AVERAGE_POOL_2D": "avgpool",
}


class AttributionError(MixdeployError):
    """The op profile cannot be matched to the model's ops."""


@dataclass
class ModelOp:
    index: int                       # TFLite node index (execution order)
    op_name: str                     # builtin name, e.g. DEPTHWISE_CONV_2D
    outputs: list[str]               # output tensor names
    kernel: tuple[int, int] | None = None   # depthwise / conv kernel (height, width)

    @property
    def kind(self) -> str:
        return TFLITE_KINDS.get(self.op_name, self.op_name.lower())

    @property
    def scopes(self) -> list[str]:
        """The ONNX node scopes its output names carry (`a;b` names of fused ops split)."""
        return [part for name in self.outputs for part in name.split(";")]


@dataclass
class AttributedRow:
    row: OpProfileRow
    op: ModelOp | None                                   # the op it timed, when matched
    neighbours: tuple = field(default=(None, None))      # the anchors around an unmatched XNNPACK row


def model_ops(tflite_path: str | Path) -> list[ModelOp]:
    """The model's ops in execution order (the interpreter's own DELEGATE nodes left out)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = []
    for op in interp._get_ops_details():
        if op["op_name"] == "DELEGATE":
            continue
        kernel = None
        if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op["inputs"]) > 1:
            shape = tensors[op["inputs"][1]]["shape"]        # out|1, kh, kw, in|channels
            kernel = (int(shape[1]), int(shape[2]))
        ops.append(ModelOp(int(op["index"]), op["op_name"], [tensors[i]["name"] for i in op["outputs"]], kernel))
    return ops


def xnnpack_kind(operator: str) -> str:
    head = operator.split(" (")[0].strip().lower()
    return XNNPACK_KINDS.get(head, head)


def is_partition_row(row: OpProfileRow) -> bool:
    return "Delegate" in row.node_type and not _DELEGATE_ROW.match(row.name.strip())


def attribute(rows: list[OpProfileRow], ops: list[ModelOp]) -> list[AttributedRow]:
    """Each op row with the model op it timed (partition rows left out: their time is their ops')."""
    by_index = {op.index: op for op in ops}
    by_outputs = {tuple(op.outputs): op for op in ops}
    named, delegated = [], []
    for row in rows:
        name = row.name.strip()
        if is_partition_row(row):
            continue
        if _DELEGATE_ROW.match(name):
            delegated.append(row)
        elif m := _NAMED_ROW.match(name):
            outputs = tuple(m.group(1).split(", "))
            named.append(AttributedRow(row, by_outputs.get(outputs) or by_index.get(int(m.group(2)))))
    claimed = {ar.op.index for ar in named if ar.op is not None}
    in_partitions = [op for op in ops if op.index not in claimed]
    return named + _match_delegated(delegated, in_partitions)


def _match_delegated(rows: list[OpProfileRow], ops: list[ModelOp]) -> list[AttributedRow]:
    if not rows:
        return []
    row_kinds = [xnnpack_kind(_DELEGATE_ROW.match(r.name.strip()).group(1)) for r in rows]
    op_kinds = [op.kind for op in ops]
    row_anchors = [i for i, k in enumerate(row_kinds) if k in ANCHORS]
    op_anchors = [j for j, k in enumerate(op_kinds) if k in ANCHORS]
    if len(row_anchors) != len(op_anchors):
        raise AttributionError(
            f"the op profile has {len(row_anchors)} XNNPACK convolution/fully-connected rows but the model "
            f"has {len(op_anchors)} such ops in XNNPACK partitions, so its rows cannot be matched to the "
            f"model's layers (is it the profile of this model, from a benchmark_model with per-operator "
            f"XNNPACK profiling, TF 2.9 or later?)")
    matched: list[AttributedRow] = []
    bounds_r = [-1, *row_anchors, len(rows)]
    bounds_o = [-1, *op_anchors, len(ops)]
    for g in range(len(bounds_r) - 1):
        left = ops[bounds_o[g]] if g > 0 else None
        right = ops[bounds_o[g + 1]] if g < len(op_anchors) else None
        if g > 0:
            matched.append(AttributedRow(rows[bounds_r[g]], left))
        gap_r = range(bounds_r[g] + 1, bounds_r[g + 1])
        gap_o = range(bounds_o[g] + 1, bounds_o[g + 1])
        matched += _match_gap([rows[i] for i in gap_r], [row_kinds[i] for i in gap_r],
                              [ops[j] for j in gap_o], (left, right))
    return matched


def _match_gap(rows, kinds, ops, neighbours) -> list[AttributedRow]:
    out = [AttributedRow(row, None, neighbours) for row in rows]
    matcher = difflib.SequenceMatcher(None, kinds, [op.kind for op in ops], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        # equal kinds pair up; a run of other kinds pairs up only when the counts agree
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for i, j in zip(range(i1, i2), range(j1, j2)):
                out[i].op = ops[j]
    return out


class LayerScopes:
    """ONNX node scopes (as TF name scopes) -> the layer they belong to; longest scope wins."""

    def __init__(self, layers: dict[str, list[str]]):
        self.prefixes = sorted(((scope, layer) for layer, scopes in layers.items() for scope in scopes),
                               key=lambda pair: -len(pair[0]))

    def of_op(self, op: ModelOp | None) -> str | None:
        if op is None:
            return None
        for part in op.scopes:
            for scope, layer in self.prefixes:
                if part == scope or part.startswith((scope + "/", scope + ".")):
                    return layer
        return None

    def of_row(self, attributed: AttributedRow) -> str | None:
        if attributed.op is not None:
            return self.of_op(attributed.op)
        left, right = (self.of_op(op) for op in attributed.neighbours)
        return left if left is not None and left == right else None


@dataclass
class LayerTimes:
    ms: dict[str, float]             # layer -> avg ms summed over its rows
    other_ms: float                  # rows of no MixConv layer
    unmatched_ms: float              # XNNPACK rows matched to no op and between different layers

    @property
    def total_ms(self) -> float:
        return sum(self.ms.values()) + self.other_ms + self.unmatched_ms


def layer_times(attributed: list[AttributedRow], scopes: LayerScopes) -> LayerTimes:
    times = LayerTimes({}, 0.0, 0.0)
    for ar in attributed:
        layer = scopes.of_row(ar)
        if layer is not None:
            times.ms[layer] = times.ms.get(layer, 0.0) + ar.row.avg_ms
        elif ar.op is None and any(ar.neighbours):
            times.unmatched_ms += ar.row.avg_ms
        else:
            times.other_ms += ar.row.avg_ms
    return times
