"""The report's plots, as SVG (vector: sharp at laptop width and on a phone's dense screen).

Each function takes plain numbers and returns SVG bytes; mixdeploy.report.build decides what
to plot. Styling (palette, markers, hatches) comes from mixdeploy.report.style.
"""

from __future__ import annotations

import io

from matplotlib.ticker import MaxNLocator

from mixdeploy.report.style import (FIGURE_WIDTH_IN, FLAG_COLOUR, FLAG_HATCH, NEUTRAL_COLOUR, SMALL_FONT,
                                    pyplot, series_styles)

BAR_HEIGHT_IN = 0.28     # per bar of a horizontal bar chart: labels stay readable, whatever the count


def to_svg(fig) -> bytes:
    buffer = io.BytesIO()
    # No date in the metadata: the same inputs give the same bytes.
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    pyplot().close(fig)
    return buffer.getvalue()


def _barh_figure(count: int):
    plt = pyplot()
    return plt.subplots(figsize=(FIGURE_WIDTH_IN, 0.9 + BAR_HEIGHT_IN * max(count, 1)))


def flagged_bars(labels: list[str], values: list[float], flagged: list[bool], xlabel: str,
                 flag_text: str, value_format: str = "{:.3g}", lines: dict[str, float] | None = None) -> bytes:
    """Horizontal bars, largest on top; flagged bars in vermillion, hatched and labelled `flag_text`.

    `lines`: vertical reference lines, legend label -> x (e.g. the pure-rounding error).
    """
    fig, ax = _barh_figure(len(values))
    positions = list(range(len(values)))[::-1]
    colours = [FLAG_COLOUR if f else NEUTRAL_COLOUR for f in flagged]
    hatches = [FLAG_HATCH if f else "" for f in flagged]
    bars = ax.barh(positions, values, color=colours, hatch=hatches, edgecolor="white", linewidth=0.5)
    ax.set_yticks(positions, labels, fontsize=SMALL_FONT)
    for bar, value, flag in zip(bars, values, flagged):
        text = value_format.format(value) + (f"  {flag_text}" if flag else "")
        ax.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=SMALL_FONT)
    for (label, x), style in zip((lines or {}).items(), ("--", ":", "-.")):
        ax.axvline(x, color="black", linestyle=style, linewidth=1, label=label)
    if lines:   # above the bars, where it hides none of them
        ax.legend(fontsize=SMALL_FONT, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=len(lines), frameon=False)
    ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.set_xlabel(xlabel)
    ax.margins(x=0.3)       # room for the value labels
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return to_svg(fig)


def grouped_bars(categories: list[str], series: dict[str, list[float]], ylabel: str,
                 value_format: str = "{:+.1f}", label_zero: bool = False) -> bytes:
    """Vertical bars per category, one hatched colour per series (legend), values written on bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(FIGURE_WIDTH_IN, 3.6))
    width = 0.8 / max(len(series), 1)
    for i, ((name, values), (colour, _, hatch)) in enumerate(zip(series.items(), series_styles())):
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
        bars = ax.bar(xs, values, width, label=name, color=colour, hatch=hatch, edgecolor="white", linewidth=0.5)
        for bar, value in zip(bars, values):
            if value or label_zero:
                ax.annotate(value_format.format(value), (bar.get_x() + bar.get_width() / 2, value),
                            xytext=(0, 2 if value >= 0 else -9), textcoords="offset points",
                            ha="center", fontsize=SMALL_FONT)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=SMALL_FONT)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.2)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=SMALL_FONT)
    fig.tight_layout()
    return to_svg(fig)


def grouped_barh(categories: list[str], series: dict[str, list[float]], xlabel: str) -> bytes:
    """Horizontal grouped bars (long category names such as op types), counts written on bars."""
    fig, ax = _barh_figure(len(categories) * max(len(series), 1) * 0.6)
    height = 0.8 / max(len(series), 1)
    top = len(categories) - 1
    for i, ((name, values), (colour, _, hatch)) in enumerate(zip(series.items(), series_styles())):
        ys = [top - c + ((len(series) - 1) / 2 - i) * height for c in range(len(categories))]
        bars = ax.barh(ys, values, height, label=name, color=colour, hatch=hatch, edgecolor="white", linewidth=0.5)
        for bar, value in zip(bars, values):
            if value:
                ax.annotate(f"{value:g}", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(2, 0),
                            textcoords="offset points", va="center", fontsize=SMALL_FONT)
    ax.set_yticks([top - c for c in range(len(categories))], categories, fontsize=SMALL_FONT)
    ax.set_xlabel(xlabel)
    ax.margins(x=0.12)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=SMALL_FONT, loc="lower right")
    fig.tight_layout()
    return to_svg(fig)


def latency_vs_macs(rows) -> bytes:
    """The bench command's latency-vs-MACs figure (mixdeploy.bench.report), as SVG."""
    from mixdeploy.bench.report import latency_vs_macs_figure

    return to_svg(latency_vs_macs_figure(rows))
