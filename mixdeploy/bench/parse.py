"""Parsers for the text that `benchmark_model` prints.

Two tools share the name:
- the classic TFLite benchmark_model (microseconds; newer builds prefix every log line with
  `INFO: `; `count=... p5= median= p95=` percentiles only in some builds; `(all same)` when
  every run took the same time; op-profiling tables whose columns changed between builds, so
  they are read from the header line);
- the newer LiteRT "CompiledModel" benchmark (milliseconds, `INFO: [file.h:NN] ` prefixes).

Everything is returned in milliseconds so callers never juggle units. Output that is not what
either tool prints (a crash mid-run, a truncated log, a number that is not one) raises
BenchmarkParseError, never anything else; a line that does not parse is skipped.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field

from mixdeploy.errors import MixdeployError


class BenchmarkParseError(MixdeployError, ValueError):
    """benchmark_model printed no usable timings (a ValueError too, for callers that catch that)."""

# `INFO: ` (classic, newer builds) and `INFO: [benchmark_litert_model.h:92] ` (LiteRT).
_LOG_PREFIX = re.compile(r"^(?:(?:INFO|WARNING|ERROR|VERBOSE): )?(?:\[[\w./-]+\.(?:h|cc|cpp):\d+\]\s*)?")
_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


@dataclass
class TimingStats:
    """One `count=...` line (or the LiteRT equivalent), in milliseconds."""

    count: int
    avg_ms: float
    first_ms: float | None = None
    curr_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    p5_ms: float | None = None
    median_ms: float | None = None
    p95_ms: float | None = None


@dataclass
class OpProfileRow:
    node_type: str
    name: str
    avg_ms: float
    first_ms: float | None = None
    start_ms: float | None = None
    percent: float | None = None
    cdf_percent: float | None = None
    mem_kb: float | None = None
    times_called: int | None = None


@dataclass
class BenchmarkOutput:
    tool: str                                   # "classic" or "litert"
    model_size_mb: float | None = None
    init_ms: float | None = None
    first_inference_ms: float | None = None
    warmup: TimingStats | None = None
    inference: TimingStats | None = None
    init_memory_mb: float | None = None         # classic: footprint delta / peak at init
    overall_memory_mb: float | None = None
    peak_memory_mb: float | None = None         # periodic monitoring (classic) / peak (LiteRT)
    threads: int | None = None
    op_profile: list[OpProfileRow] = field(default_factory=list)

    @property
    def avg_ms(self) -> float | None:
        return self.inference.avg_ms if self.inference else None

    @property
    def median_ms(self) -> float | None:
        """The median when the tool printed one, else the mean (the classic tool's default)."""
        if self.inference is None:
            return None
        return self.inference.median_ms if self.inference.median_ms is not None else self.inference.avg_ms


def strip_log_prefix(line: str) -> str:
    return _LOG_PREFIX.sub("", line.rstrip("\r\n"), count=1)


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse either tool's stdout; raises BenchmarkParseError (a ValueError) when no usable
    timing is found: none at all, or one that is negative, NaN or infinite."""
    lines = [strip_log_prefix(line) for line in text.splitlines()]
    if any(re.match(r"\s*Inference \(avg\):\s+" + _NUMBER + r"\s*ms", ln) for ln in lines):
        result = _parse_litert(lines)
    else:
        result = _parse_classic(lines)
    if result.inference is None:
        raise BenchmarkParseError("no inference timings found in benchmark_model output")
    if not _plausible(result.inference.avg_ms):
        raise BenchmarkParseError(f"benchmark_model printed an impossible average time ({result.inference.avg_ms} ms)")
    _drop_implausible(result)
    return result


def _plausible(ms: float | None) -> bool:
    return ms is not None and math.isfinite(ms) and ms >= 0


def _drop_implausible(result: BenchmarkOutput) -> None:
    """Optional numbers that are NaN/inf or negative become None (unknown), not a wrong value."""
    for stats in (result.inference, result.warmup):
        if stats is None:
            continue
        for f in dataclasses.fields(stats):
            value = getattr(stats, f.name)
            if f.name.endswith("_ms") and value is not None and not _plausible(value):
                setattr(stats, f.name, None)
    if result.warmup is not None and result.warmup.avg_ms is None:
        result.warmup = None
    for name in ("model_size_mb", "init_ms", "first_inference_ms", "init_memory_mb", "overall_memory_mb",
                 "peak_memory_mb"):
        value = getattr(result, name)
        if value is not None and not math.isfinite(value):
            setattr(result, name, None)
    result.op_profile = [row for row in result.op_profile if _plausible(row.avg_ms)]


# --- classic TFLite benchmark_model -------------------------------------------------------

_COUNT_LINE = re.compile(r"^\s*count=(\d+)\s+(.*)$")
_KEY_VALUE = re.compile(r"(\w+)=(" + _NUMBER + r")")


def _us_to_ms(value: str | None) -> float | None:
    return None if value is None else float(value) / 1000.0


def parse_count_line(line: str) -> TimingStats | None:
    """`count=50 first=.. curr=.. min=.. max=.. avg=.. std=.. [p5=.. median=.. p95=..]` (us),
    or `count=N curr=X (all same)` where every run took X."""
    m = _COUNT_LINE.match(strip_log_prefix(line))
    if not m:
        return None
    count, rest = int(m.group(1)), m.group(2)
    values = dict(_KEY_VALUE.findall(rest))
    if "(all same)" in rest:
        same = _us_to_ms(values.get("curr"))
        if same is None:
            return None
        return TimingStats(count=count, avg_ms=same, first_ms=same, curr_ms=same, min_ms=same,
                           max_ms=same, std_ms=0.0, p5_ms=same, median_ms=same, p95_ms=same)
    if "avg" not in values:
        return None
    return TimingStats(
        count=count,
        avg_ms=_us_to_ms(values["avg"]),
        first_ms=_us_to_ms(values.get("first")),
        curr_ms=_us_to_ms(values.get("curr")),
        min_ms=_us_to_ms(values.get("min")),
        max_ms=_us_to_ms(values.get("max")),
        std_ms=_us_to_ms(values.get("std")),
        p5_ms=_us_to_ms(values.get("p5")),
        median_ms=_us_to_ms(values.get("median")),
        p95_ms=_us_to_ms(values.get("p95")),
    )


def _search_float(pattern: str, line: str) -> float | None:
    m = re.search(pattern, line)
    return float(m.group(1)) if m else None


def _parse_classic(lines: list[str]) -> BenchmarkOutput:
    out = BenchmarkOutput(tool="classic")
    timing_lines = [stats for stats in map(parse_count_line, lines) if stats is not None]
    # The tool prints the warm-up pass first, then the measured runs.
    if timing_lines:
        out.inference = timing_lines[-1]
        if len(timing_lines) > 1:
            out.warmup = timing_lines[0]
    for line in lines:
        if (v := _search_float(r"The input model file size \(MB\):\s*(" + _NUMBER + ")", line)) is not None:
            out.model_size_mb = v
        elif (v := _search_float(r"Initialized session in\s*(" + _NUMBER + r")\s*ms", line)) is not None:
            out.init_ms = v
        elif line.startswith("Inference timings in us:"):
            _apply_inference_summary(out, line)
        elif m := re.search(r"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\):"
                            r"\s*init=(" + _NUMBER + r")\s+overall=(" + _NUMBER + ")", line):
            out.init_memory_mb, out.overall_memory_mb = float(m.group(1)), float(m.group(2))
        elif (v := _search_float(r"Overall peak memory footprint \(MB\) via periodic monitoring:\s*("
                                 + _NUMBER + ")", line)) is not None:
            out.peak_memory_mb = v
        elif (v := _search_float(r"#threads used for CPU inference:\s*\[(\d+)\]", line)) is not None:
            out.threads = int(v)
        elif out.threads is None and (v := _search_float(r"^Num threads:\s*\[(\d+)\]", line)) is not None:
            out.threads = int(v)
    out.op_profile = parse_op_profile(lines)
    return out


def _apply_inference_summary(out: BenchmarkOutput, line: str) -> None:
    """`Inference timings in us: Init: 855, First inference: 49060, Warmup (avg): .., Inference (avg): ..`"""
    fields = dict(re.findall(r"([A-Za-z][A-Za-z ()]*?):\s*(" + _NUMBER + ")", line.split(":", 1)[1]))
    fields = {k.strip(): float(v) / 1000.0 for k, v in fields.items()}
    if "Init" in fields and out.init_ms is None:
        out.init_ms = fields["Init"]
    out.first_inference_ms = fields.get("First inference", out.first_inference_ms)
    if out.inference is None and "Inference (avg)" in fields:
        out.inference = TimingStats(count=0, avg_ms=fields["Inference (avg)"])


# --- op-profiling tables -------------------------------------------------------------------

_PROFILE_SECTION = "Operator-wise Profiling Info for Regular Benchmark Runs:"
_COLUMN_TO_FIELD = {
    "node type": "node_type", "start": "start_ms", "first": "first_ms", "avg ms": "avg_ms",
    "%": "percent", "cdf%": "cdf_percent", "mem KB": "mem_kb", "times called": "times_called",
    "Name": "name",
}


def parse_op_profile(lines: list[str]) -> list[OpProfileRow]:
    """Rows of the `Run Order` table of the regular-runs profile (not the init profile).

    Columns are taken from the header line (`[node type] [start] [first] ...`): newer builds
    dropped `[start]`, so positions are never hard-coded.
    """
    lines = [strip_log_prefix(line) for line in lines]
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip() == _PROFILE_SECTION)
    except StopIteration:
        return []
    rows: list[OpProfileRow] = []
    columns: list[str] | None = None
    for line in lines[start + 1:]:
        stripped = line.strip()
        if stripped.startswith("====="):
            if columns is not None:  # the next table (Top by Computation Time) begins
                break
            continue
        if columns is None:
            if stripped.startswith("[node type]"):
                columns = re.findall(r"\[([^\]]+)\]", stripped)
            continue
        if not stripped:
            break
        row = _parse_profile_row(line, columns)
        if row is not None:
            rows.append(row)
    return rows


def _parse_profile_row(line: str, columns: list[str]) -> OpProfileRow | None:
    cells = [c.strip() for c in line.strip("\n").split("\t")]
    cells = [c for c in cells if c != ""] if len(cells) > len(columns) else cells
    if len(cells) < len(columns):
        return None
    # The name is last and may itself contain tabs/spaces: give it the rest of the cells.
    cells = cells[: len(columns) - 1] + ["\t".join(cells[len(columns) - 1:])]
    values: dict = {}
    for column, cell in zip(columns, cells):
        field_name = _COLUMN_TO_FIELD.get(column)
        if field_name is None:
            continue
        if field_name in ("node_type", "name"):
            values[field_name] = cell
            continue
        try:
            number = float(cell.rstrip("%"))
        except ValueError:
            return None   # not a row of the table (a log line in the middle of it)
        if not math.isfinite(number):
            return None
        values[field_name] = int(number) if field_name == "times_called" else number
    if "avg_ms" not in values or "node_type" not in values:
        return None
    values.setdefault("name", "")
    return OpProfileRow(**values)


# --- LiteRT CompiledModel benchmark --------------------------------------------------------

def _parse_litert(lines: list[str]) -> BenchmarkOutput:
    out = BenchmarkOutput(tool="litert")
    found: dict[str, float] = {}
    runs: dict[str, int] = {}
    for line in lines:
        m = re.match(r"\s*([A-Za-z][A-Za-z ()]*?):\s+(" + _NUMBER + r")\s*(ms|MB)?(?:\s*\((\d+) runs\))?", line)
        if not m:
            continue
        key = m.group(1).strip()
        found[key] = float(m.group(2))
        if m.group(4):
            runs[key] = int(m.group(4))
    out.init_ms = found.get("Model initialization")
    out.first_inference_ms = found.get("Warmup (first)")
    if "Warmup (avg)" in found:
        out.warmup = TimingStats(count=runs.get("Warmup (avg)", 0), avg_ms=found["Warmup (avg)"],
                                 first_ms=found.get("Warmup (first)"))
    if "Inference (avg)" in found:
        out.inference = TimingStats(
            count=runs.get("Inference (avg)", 0),
            avg_ms=found["Inference (avg)"],
            min_ms=found.get("Inference (min)"),
            max_ms=found.get("Inference (max)"),
            std_ms=found.get("Inference (std)"),
            median_ms=found.get("Inference (median)"),
        )
    out.init_memory_mb = found.get("Init footprint")
    out.overall_memory_mb = found.get("Overall footprint")
    out.peak_memory_mb = found.get("Peak memory usage")
    return out
