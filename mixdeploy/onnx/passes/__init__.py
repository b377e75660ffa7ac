"""Rewrite passes: one interface for all of them.

A pass is a function `(model: onnx_ir.Model, options: RewriteOptions) -> PassOutcome`: it
rewrites the model in place and says what it touched (names of nodes or layers) and
pass-specific facts for the report (what it found, why it left something alone).
`mixdeploy.onnx.rewrite.PASSES` lists them by name; one loop there runs any sequence of them.
Every pass keeps what the graph computes (checked with onnxruntime in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass
class PassOutcome:
    touched: list[str] = field(default_factory=list)   # names of the nodes/layers rewritten
    details: dict = field(default_factory=dict)        # pass-specific facts for the report


@dataclass(frozen=True)
class RewriteOptions:
    """What the caller of `rewrite()` decides for the passes (only lower_mixconv reads it today)."""

    lowering: str = "split"          # a LOWERINGS name, or 'auto' (per layer, timed: onnx/policy.py)
    runtime: str = "fp32"            # the LiteRT precision 'auto' times ('fp32' | 'int8')
    progress: Callable[[int, int, str], None] | None = None   # (done, total, layer) while 'auto' times
