"""How every mixdeploy plot looks: colour-blind-safe colours, and never colour alone.

Okabe & Ito's palette (2008) stays distinct under the common colour-vision deficiencies; each
series also gets its own marker and hatch, and values are written on the bars, so a plot still
reads in greyscale. Figures are sized for a laptop column and scale down on a phone (SVG).
"""

from __future__ import annotations

from itertools import cycle

# Okabe-Ito, without its black (kept for text) and its yellow (too light on white).
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
HATCHES = ("", "//", "..", "xx", "\\\\", "--", "++")
FLAG_COLOUR = "#D55E00"   # vermillion: the one colour that means "look here"
FLAG_HATCH = "xx"
NEUTRAL_COLOUR = "#0072B2"
# 5.5 in (528 px at 96 dpi) with 8-10 pt text: natural size on a laptop, and on a phone
# (shrunk to ~370 px) the text stays near 7 px; the SVG stays sharp when zoomed.
FIGURE_WIDTH_IN = 5.5
SMALL_FONT = 8


def series_styles():
    """An endless run of (colour, marker, hatch): the n-th series differs from the others in all three."""
    return cycle(zip(OKABE_ITO, MARKERS, HATCHES))


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on servers / in CI), text kept as text in SVG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 10, "axes.titlesize": 10, "legend.fontsize": SMALL_FONT,
                         "xtick.labelsize": SMALL_FONT, "ytick.labelsize": SMALL_FONT,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt
