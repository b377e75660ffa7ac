"""lower_mixconv: every MixConv lowered as `options.lowering` says (one lowering for all, or
'auto': per layer, the fastest one timed on this machine's LiteRT, onnx/policy.py)."""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from mixdeploy.onnx.graph import Namer
from mixdeploy.onnx.lowering import LOWER
from mixdeploy.onnx.passes import GRAPH, PassOutcome, RewriteOptions
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec, describe, find_mixconvs


def lower_mixconv(model: ir.Model, options: RewriteOptions) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome(details={"layers": [], "extra_macs": 0})
    specs = [(match, describe(match)) for match in find_mixconvs(graph)]
    if not specs:
        outcome.decline(GRAPH, "no MixConv (Split -> depthwise Convs -> Concat) in the graph")
    choose = chooser([spec for _, spec in specs], options)
    for match, spec in specs:
        asked = choose(spec)
        done = LOWER[asked](graph, namer, match)
        outcome.details["layers"].append({"name": spec.name, "kernels": [k[0] for k in spec.kernels],
                                          "asked": asked, "applied": done.lowering,
                                          "extra_macs": done.extra_macs, "note": done.note})
        outcome.details["extra_macs"] += done.extra_macs
        if done.lowering != "split":
            outcome.touched.append(spec.name)
        else:
            outcome.decline(spec.name, why_split(options.lowering, asked, done.note))
    return outcome


def why_split(lowering: str, asked: str, note: str) -> str:
    """Why a layer kept the split form: the lowering could not improve it, or split was the choice."""
    if note:
        return f"{asked} asked: {note}"
    if lowering == "auto":
        return "auto chose split: the fastest lowering measured for this layer shape (here or by `mixdeploy tune`)"
    return "split asked: the Split -> depthwise Convs -> Concat form stays"


def chooser(specs: list[MixConvSpec], options: RewriteOptions) -> Callable[[MixConvSpec], str]:
    if options.lowering != "auto":
        return lambda spec: options.lowering
    from mixdeploy.onnx.policy import choose_lowerings

    choices = choose_lowerings(specs, runtime=options.runtime, progress=options.progress)
    return lambda spec: choices[spec.signature]
