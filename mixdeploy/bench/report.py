"""Latency next to MACs and the 600M-MAC budget: a table, and a latency-vs-MACs plot.

MACs come from the manifest.json that `mixdeploy export` writes beside its .tflite files
(`model.macs`, or a top-level `macs`); a model without one is still listed, without MACs.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mixdeploy.artifacts import ExportFolder
from mixdeploy.atomic import atomic_path

MAC_BUDGET = 600_000_000      # the mobile-setting budget MixNets were designed for (<600M MACs)


@dataclass
class LatencyRow:
    label: str                   # model name (from the manifest) + file name
    path: str
    target: str                  # "host" or the phone's model/serial
    config: str                  # e.g. "litert xnnpack x2", "xnnpack x2 mask c0"
    median_ms: float
    tail_ms: float | None        # host: p90 of the runs; phone: p95 when the tool prints it
    macs: int | None
    lowering: str | None = None  # the MixConv lowering the export used (manifest), e.g. "auto"

    @property
    def within_budget(self) -> bool | None:
        return None if self.macs is None else self.macs <= MAC_BUDGET

    @property
    def ms_per_gmac(self) -> float | None:
        return None if not self.macs else self.median_ms / (self.macs / 1e9)

    def to_dict(self) -> dict:
        return {**asdict(self), "within_budget": self.within_budget, "ms_per_gmac": self.ms_per_gmac}


def macs_for(tflite_path: str | os.PathLike) -> int | None:
    return ExportFolder.beside(tflite_path).macs


def lowering_for(tflite_path: str | os.PathLike) -> str | None:
    return ExportFolder.beside(tflite_path).lowering


def label_for(tflite_path: str | os.PathLike, folder: ExportFolder | None = None) -> str:
    name = (folder or ExportFolder.beside(tflite_path)).model_name
    path = Path(tflite_path)
    return f"{name}/{path.name}" if name else path.name


def export_facts(tflite_path: str | os.PathLike) -> dict:
    """label, macs and lowering of a model from its export folder's manifest, read once."""
    folder = ExportFolder.beside(tflite_path)
    return {"label": label_for(tflite_path, folder), "macs": folder.macs, "lowering": folder.lowering}


def rows_from_host(result) -> list[LatencyRow]:
    facts = export_facts(result.model_path)
    return [LatencyRow(path=result.model_path, target="host", config=c.label,
                       median_ms=c.median_ms, tail_ms=c.p90_ms, **facts)
            for c in result.configs]


def phone_target(model: str | None, server: str, serial: str) -> str:
    """A phone as results name it: its model, the adb server it hangs off and its serial."""
    return f"{model or serial} ({server}/{serial})" if server else (model or serial)


def rows_from_phone(result) -> list[LatencyRow]:
    bench = result.benchmark
    config = f"{result.delegate} x{result.threads}" + (f" mask {result.cpu_mask}" if result.cpu_mask else "")
    p95 = bench.inference.p95_ms if bench.inference else None
    return [LatencyRow(path=result.model_path,
                       target=phone_target(result.device.model, result.server, result.device.serial),
                       config=config, median_ms=bench.median_ms, tail_ms=p95, **export_facts(result.model_path))]


def latency_table(rows: list[LatencyRow], title: str = "Latency vs MACs", failures=()):
    """The table; `failures` (fleet runs that did not finish) are rows of their own, in red."""
    from rich.table import Table

    from rich.markup import escape

    table = Table(title=f"{title} (budget {MAC_BUDGET / 1e6:.0f}M MACs)")
    for column, justify in (("model", "left"), ("target", "left"), ("config", "left"),
                            ("MACs", "right"), ("budget", "left"), ("median ms", "right"),
                            ("p90/p95 ms", "right"), ("ms/GMAC", "right")):
        # Numbers never wrap; names fold when the terminal is narrow (80 columns in pipes).
        table.add_column(column, justify=justify, overflow="fold", no_wrap=justify == "right")
    for row in rows:
        budget = {None: "?", True: "[green]within[/]", False: "[red]over[/]"}[row.within_budget]
        table.add_row(escape(row.label), escape(row.target), escape(row.config),
                      f"{row.macs / 1e6:.0f}M" if row.macs else "-", budget, f"{row.median_ms:.3f}",
                      f"{row.tail_ms:.3f}" if row.tail_ms is not None else "-",
                      f"{row.ms_per_gmac:.2f}" if row.ms_per_gmac is not None else "-")
    for failure in failures:
        reason = failure.error.strip().splitlines()[0] if failure.error.strip() else "failed"
        table.add_row(escape(label_for(failure.model_path)),
                      escape(phone_target(failure.device_model, failure.server, failure.serial)),
                      f"[red]FAILED[/]: {escape(reason)}", "-", "-", "-", "-", "-")
    return table


def latency_vs_macs_figure(rows: list[LatencyRow]):
    """Median latency against MACs: one line per target, config, lowering and file kind, the budget line.

    The x axis turns logarithmic when the models are far under the budget (32-px test models),
    so the budget line stays in view without squashing the points against the axis.
    """
    from mixdeploy.report.style import FIGURE_WIDTH_IN, SMALL_FONT, pyplot, series_styles

    plotted = [r for r in rows if r.macs]
    if not plotted:
        from mixdeploy.errors import MixdeployError
        raise MixdeployError("no MACs known for these models, so there is nothing to plot: bench "
                             "files from `mixdeploy export` (their manifest.json has the MACs)")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 4.0))
    series: dict[str, list[LatencyRow]] = {}
    for row in plotted:
        # One line per target, config and file kind (model_int8.tflite of S, M, L together).
        lowering = f" {row.lowering}" if row.lowering else ""
        series.setdefault(f"{row.target} {row.config}{lowering} {Path(row.path).name}", []).append(row)
    for (name, members), (colour, marker, _) in zip(series.items(), series_styles()):
        members = sorted(members, key=lambda r: r.macs)
        ax.plot([r.macs / 1e6 for r in members], [r.median_ms for r in members], marker=marker,
                color=colour, label=name)
        for r in members:
            ax.annotate(Path(r.path).stem if "/" not in r.label else r.label.split("/")[0],
                        (r.macs / 1e6, r.median_ms), textcoords="offset points", xytext=(4, 4), fontsize=SMALL_FONT)
    ax.axvline(MAC_BUDGET / 1e6, color="grey", linestyle="--", label=f"{MAC_BUDGET / 1e6:.0f}M MAC budget")
    if min(r.macs for r in plotted) < MAC_BUDGET / 10:
        ax.set_xscale("log")
    ax.set_xlabel("MACs (millions)")
    ax.set_ylabel("median latency (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_FONT)
    fig.tight_layout()
    return fig


def plot_latency_vs_macs(rows: list[LatencyRow], out_path: str | os.PathLike) -> Path:
    """latency_vs_macs_figure written to `out_path` (format from its suffix, PNG by default)."""
    from mixdeploy.report.style import pyplot

    fig = latency_vs_macs_figure(rows)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=out_path.suffix.lstrip(".") or "png", dpi=120)
    pyplot().close(fig)
    return out_path
