"""This release against an older one: latency, file sizes, parity, matched by name, flagged past a tolerance.

Items are matched by what stays stable across releases: a latency row by model/file, target
and config; a parity backend by model and backend name; a file by export label and file name.
Latency and size compare relatively (percent), accuracy in points (0.1 point = 1 image in 1000).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Accuracy comes in whole images (0.05 points of 2000): a change of exactly the tolerance is not
# over it, whatever float subtraction makes of it (0.8895*100 - 0.8905*100 = -0.10000000000000853).
ROUNDING = 1e-9


@dataclass(frozen=True)
class Tolerances:
    relative_pct: float = 5.0        # latency and file size
    accuracy_points: float = 0.1     # top-1 agreement and top-1 accuracy


@dataclass
class Change:
    what: str                  # "latency", "file size", "top-1 agreement", "top-1"
    item: str
    before: float
    after: float
    unit: str                  # "ms" | "bytes" | "%"
    lower_is_better: bool
    tolerance: float
    relative: bool             # compare as a percentage of `before` (else a difference in points)

    @property
    def delta(self) -> float:
        if self.relative:
            return (self.after - self.before) / self.before * 100.0 if self.before else float("inf")
        return self.after - self.before

    @property
    def flagged(self) -> bool:
        return abs(self.delta) > self.tolerance + ROUNDING

    @property
    def worse(self) -> bool:
        return (self.delta > 0) == self.lower_is_better and self.delta != 0

    @property
    def verdict(self) -> str:
        if not self.flagged:
            return "same (within tolerance)"
        words = {"latency": ("faster", "slower"), "file size": ("smaller", "larger")}.get(
            self.what, ("more accurate", "less accurate"))
        return ("⚑ " + words[1]) if self.worse else words[0]

    def _fmt(self, value: float) -> str:
        if self.unit == "bytes":
            return f"{value / 1e6:.3f} MB"
        if self.unit == "%":
            return f"{value:.2f}%"
        return f"{value:.3f} ms"

    @property
    def before_text(self) -> str:
        return self._fmt(self.before)

    @property
    def after_text(self) -> str:
        return self._fmt(self.after)

    @property
    def change_text(self) -> str:
        return f"{self.delta:+.1f}%" if self.relative else f"{self.delta:+.2f} pts"


@dataclass
class Changes:
    rows: list[Change] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)     # in one release only


def _pair(now: dict, old: dict, what: str, changes: Changes, make) -> None:
    for key in sorted(now.keys() & old.keys()):
        changes.rows.append(make(key, old[key], now[key]))
    for key in sorted(now.keys() - old.keys()):
        changes.unmatched.append(f"{what} {key}: new, not in the baseline")
    for key in sorted(old.keys() - now.keys()):
        changes.unmatched.append(f"{what} {key}: in the baseline only")


def _latencies(rows) -> dict[str, float]:
    return {f"{r.label} on {r.target} ({r.config})": r.median_ms for r in rows}


def _file_sizes(inputs) -> dict[str, int]:
    return {f"{e.label}/{f['path']}": f["bytes"] for e in inputs.exports
            for f in e.manifest.get("files") or [] if f.get("bytes") is not None}


def _parity_values(inputs, field_name: str) -> dict[str, float]:
    return {f"{p.data.get('model')} {b['backend']}": b[field_name] * 100.0
            for p in inputs.parity for b in p.data["backends"] if b.get(field_name) is not None}


def compare_inputs(now, old, tolerances: Tolerances, now_rows, old_rows) -> Changes:
    """Every matched number of `now` (Inputs) against `old`, with the latency rows of each."""
    changes = Changes()
    rel, pts = tolerances.relative_pct, tolerances.accuracy_points
    _pair(_latencies(now_rows), _latencies(old_rows), "latency", changes,
          lambda k, a, b: Change("latency", k, a, b, "ms", True, rel, True))
    _pair(_file_sizes(now), _file_sizes(old), "file", changes,
          lambda k, a, b: Change("file size", k, a, b, "bytes", True, rel, True))
    _pair(_parity_values(now, "top1_agreement"), _parity_values(old, "top1_agreement"), "backend", changes,
          lambda k, a, b: Change("top-1 agreement", k, a, b, "%", False, pts, False))
    _pair(_parity_values(now, "top1"), _parity_values(old, "top1"), "backend", changes,
          lambda k, a, b: Change("top-1", k, a, b, "%", False, pts, False))
    # accuracy keys repeat per metric: say each missing backend once
    changes.unmatched = list(dict.fromkeys(changes.unmatched))
    return changes
