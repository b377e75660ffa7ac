"""Rewrite passes: each takes an onnx-ir Model, rewrites it in place, and says what it touched.

Every pass keeps what the graph computes (checked with onnxruntime in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassOutcome:
    touched: list[str] = field(default_factory=list)   # names of the nodes/layers rewritten
    details: dict = field(default_factory=dict)        # pass-specific facts for the report
