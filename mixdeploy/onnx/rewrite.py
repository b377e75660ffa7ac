"""Run the rewrite passes over an ONNX MixNet and report what each one changed.

Every pass has one interface (mixdeploy/onnx/passes/__init__.py); `PASSES` names them and one
loop in `rewrite()` runs any sequence. Default order: fold_pad (so pads never hide a Conv from
the next passes), fold_batchnorm (BN into the Convs, across MixConv concats), slices_to_split
(Slice-chain channel splits as one Split, the form the next passes match), recognize_mixconv
(reports the MixConvs), fuse_grouped_pointwise, lower_mixconv, piece_pads (decomposed pieces
read the input through their own Conv pads, which XNNPACK folds, instead of one shared Pad),
relu_into_branches (a Relu after a MixConv's Concat runs per branch, fused into each producer).
Opt-in, not in the default order: concat_free (MixConv concats pushed into the convs that read
them, for int8: recipe `per-branch`, applied by the converter to the rewritten graph).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import onnx
import onnx_ir as ir

from mixdeploy.errors import MixdeployError
from mixdeploy.onnx.graph import count_graph_macs, op_histogram, to_ir, to_proto
from mixdeploy.onnx.lowering import LOWERINGS
from mixdeploy.onnx.passes import Declined, PassOutcome, RewriteOptions
from mixdeploy.onnx.passes.concat_free import concat_free
from mixdeploy.onnx.passes.fold_batchnorm import fold_batchnorm
from mixdeploy.onnx.passes.fold_pad import fold_pad
from mixdeploy.onnx.passes.fuse_grouped_pointwise import fuse_grouped_pointwise
from mixdeploy.onnx.passes.lower_mixconv import lower_mixconv
from mixdeploy.onnx.passes.piece_pads import piece_pads
from mixdeploy.onnx.passes.relu_into_branches import relu_into_branches
from mixdeploy.onnx.passes.recognize_mixconv import recognize_mixconv
from mixdeploy.onnx.passes.slices_to_split import slices_to_split

PASSES: dict[str, Callable[[ir.Model, RewriteOptions], PassOutcome]] = {
    "fold_pad": fold_pad,
    "fold_batchnorm": fold_batchnorm,
    "slices_to_split": slices_to_split,
    "recognize_mixconv": recognize_mixconv,
    "fuse_grouped_pointwise": fuse_grouped_pointwise,
    "lower_mixconv": lower_mixconv,
    "piece_pads": piece_pads,
    "relu_into_branches": relu_into_branches,
    "concat_free": concat_free,
}
ALL_PASSES = tuple(PASSES)
DEFAULT_PASSES = tuple(name for name in ALL_PASSES if name != "concat_free")


@dataclass
class PassReport:
    name: str
    touched: list[str]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    macs_before: int
    macs_after: int
    seconds: float
    details: dict = field(default_factory=dict)
    declined: list[Declined] = field(default_factory=list)   # each candidate left alone, and why


@dataclass
class RewriteReport:
    lowering: str
    passes: list[PassReport] = field(default_factory=list)
    seconds: float = 0.0
    verified_rel_err: float | None = None   # set by rewrite(verify=True)

    @property
    def mixconvs(self) -> list[dict]:
        for p in self.passes:
            if p.name == "recognize_mixconv":
                return p.details.get("mixconvs", [])
        return []

    @property
    def lowering_choices(self) -> dict[str, str]:
        for p in self.passes:
            if p.name == "lower_mixconv":
                return {layer["name"]: layer["applied"] for layer in p.details["layers"]}
        return {}

    def to_dict(self) -> dict:
        return {"lowering": self.lowering, "seconds": round(self.seconds, 3),
                "verified_rel_err": self.verified_rel_err,
                "passes": [asdict(p) for p in self.passes], "lowering_choices": self.lowering_choices}

    def to_table(self):
        """A rich Table: one row per pass, op counts and MACs before -> after."""
        from mixdeploy.views.rewrite import rewrite_table

        return rewrite_table(self.to_dict())


@dataclass
class RewriteResult:
    model: onnx.ModelProto
    report: RewriteReport


def rewrite(model: onnx.ModelProto, lowering: str = "auto", passes=None, *, runtime: str | None = None,
            progress: Callable[[int, int, str], None] | None = None, verify: bool = False) -> RewriteResult:
    """Rewrite `model` with `passes` (pass names, run in the order given; default DEFAULT_PASSES).

    lowering: 'split' | 'pad' | 'decompose' | 'pad_decompose' for every MixConv, or 'auto'
    to pick per layer by timing single-layer TFLite models on this machine's LiteRT
    (`runtime` e.g. 'fp32' or 'int8'; choices cached, see policy.py). `progress(done,
    total, layer)` is called while 'auto' measures. verify=True runs both graphs in
    onnxruntime on one random input and raises if they disagree (relative error > 1e-4).
    """
    if lowering not in LOWERINGS + ("auto",):
        raise MixdeployError(f"unknown lowering {lowering!r}; choose auto, {', '.join(LOWERINGS)}.")
    names = tuple(passes) if passes is not None else DEFAULT_PASSES
    unknown = [n for n in names if n not in ALL_PASSES]
    if unknown:
        raise MixdeployError(f"unknown rewrite pass(es) {unknown}; available: {', '.join(ALL_PASSES)}.")
    options = RewriteOptions(lowering=lowering, runtime=runtime or "fp32", progress=progress)
    start = time.perf_counter()
    report = RewriteReport(lowering=lowering)
    current = onnx.shape_inference.infer_shapes(model)
    ops_now, macs_now = op_histogram(current), count_graph_macs(current, infer=False)
    for name in names:
        t0 = time.perf_counter()
        ir_model = to_ir(current, infer=False)
        outcome = PASSES[name](ir_model, options)
        if not outcome.touched and not outcome.declined:
            raise MixdeployError(f"rewrite pass {name} touched nothing and did not say why; this is a mixdeploy bug: "
                                 "report it.", exit_code=1)
        rewritten = to_proto(ir_model)  # shape-inferred: the next pass and count_graph_macs rely on it
        ops_after, macs_after = op_histogram(rewritten), count_graph_macs(rewritten, infer=False)
        report.passes.append(PassReport(
            name=name, touched=outcome.touched, ops_before=ops_now, ops_after=ops_after,
            macs_before=macs_now, macs_after=macs_after,
            seconds=time.perf_counter() - t0, details=outcome.details, declined=outcome.declined))
        current, ops_now, macs_now = rewritten, ops_after, macs_after
    onnx.checker.check_model(current)
    if verify:
        report.verified_rel_err = verify_same_function(model, current)
    report.seconds = time.perf_counter() - start
    return RewriteResult(current, report)


VERIFY_TOLERANCE = 1e-4


def verify_same_function(before: onnx.ModelProto, after: onnx.ModelProto, seed: int = 0) -> float:
    """max|a-b| / max|a| of both graphs' first output on one random input; raises past tolerance."""
    import numpy as np
    import onnxruntime as ort

    def run(m, x):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]

    dims = before.graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in dims]
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    ref, got = run(before, x), run(after, x)
    err = float(np.abs(ref - got).max() / max(np.abs(ref).max(), 1e-12))
    if not err <= VERIFY_TOLERANCE:
        raise MixdeployError(f"the rewritten graph disagrees with the original (relative error {err:.2e}); "
                             "this is a mixdeploy bug: rerun with passes=[...] to find the pass, and report it.",
                             exit_code=1)
    return err

