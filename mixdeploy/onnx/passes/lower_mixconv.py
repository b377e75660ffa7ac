"""lower_mixconv: apply a per-layer lowering choice to every recognized MixConv."""

from __future__ import annotations

from typing import Callable

import onnx_ir as ir

from mixdeploy.onnx.graph import Namer
from mixdeploy.onnx.lowering import lower_mixconv
from mixdeploy.onnx.passes import PassOutcome
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec, describe, find_mixconvs


def lower_mixconvs(model: ir.Model, choose: Callable[[MixConvSpec], str]) -> PassOutcome:
    graph = model.graph
    namer = Namer(graph)
    outcome = PassOutcome(details={"layers": [], "extra_macs": 0})
    for match in find_mixconvs(graph):
        spec = describe(match)
        asked = choose(spec)
        done = lower_mixconv(graph, namer, match, asked)
        outcome.details["layers"].append({"name": spec.name, "kernels": [k[0] for k in spec.kernels],
                                          "asked": asked, "applied": done.lowering,
                                          "extra_macs": done.extra_macs, "note": done.note})
        outcome.details["extra_macs"] += done.extra_macs
        if done.lowering != "split":
            outcome.touched.append(spec.name)
    return outcome
