"""Rewrite passes: one interface for all of them.

A pass is a function `(model: onnx_ir.Model, options: RewriteOptions) -> PassOutcome`: it
rewrites the model in place and says what it touched (names of nodes or layers), what it
declined and why (each candidate it left alone, or the whole graph when there was none), and
pass-specific facts for the report. A pass that touched nothing always says why.
`mixdeploy.onnx.rewrite.PASSES` lists them by name; one loop there runs any sequence of them.
Every pass keeps what the graph computes (checked with onnxruntime in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


GRAPH = ""   # Declined.node when the reason is about the whole graph (nothing to match in it)


@dataclass(frozen=True)
class Declined:
    """A candidate a pass left as it was, and why (node: its node or layer name — for
    slices_to_split the tensor its Slices cut — or GRAPH)."""

    node: str
    reason: str


@dataclass
class PassOutcome:
    touched: list[str] = field(default_factory=list)          # names of the nodes/layers rewritten
    declined: list[Declined] = field(default_factory=list)    # what it left alone, and why
    details: dict = field(default_factory=dict)               # pass-specific facts for the report

    def decline(self, node: str, reason: str) -> None:
        self.declined.append(Declined(node, reason))


@dataclass(frozen=True)
class RewriteOptions:
    """What the caller of `rewrite()` decides for the passes (only lower_mixconv reads it today)."""

    lowering: str = "split"          # a LOWERINGS name, or 'auto' (per layer, timed: onnx/policy.py)
    runtime: str = "fp32"            # the LiteRT precision 'auto' times ('fp32' | 'int8')
    progress: Callable[[int, int, str], None] | None = None   # (done, total, layer) while 'auto' times
