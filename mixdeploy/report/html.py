"""The report as one self-contained HTML page: inline CSS, plots as data: URIs, no script, no network.

A Content-Security-Policy forbids every fetch but inline styles and data: images, so a stray
external reference fails loudly in the browser instead of leaking a request. Tables scroll
sideways inside their own box, images shrink to the screen: the page itself never scrolls
sideways, at laptop width or on a phone.
"""

from __future__ import annotations

import base64
import re
from html import escape

from mixdeploy.report.content import Cell, Heading, Note, Paragraph, Plot, Report, Section, Table

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
:root { --ink: #1b1b1b; --muted: #555; --rule: #ddd; --worse: #B34700; --better: #005A8C; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
header, main { max-width: 1100px; margin: 0 auto; padding: 0 20px; }
header { padding-top: 16px; border-bottom: 1px solid var(--rule); }
h1 { font-size: 1.5em; margin: 0.3em 0; } h2 { font-size: 1.25em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
.facts { color: var(--muted); margin: 0.2em 0; }
nav { display: flex; flex-wrap: wrap; gap: 4px 14px; padding: 8px 0 12px; }
nav a { color: var(--better); }
section { border-bottom: 1px solid var(--rule); padding-bottom: 12px; }
figure { margin: 12px 0; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.9em; }
.table-wrap { overflow-x: auto; margin: 10px 0; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.88em; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
th, td { border-bottom: 1px solid var(--rule); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { min-width: 4em; }
.flag-worse, .flag-slow { color: var(--worse); font-weight: 600; }
.flag-better { color: var(--better); font-weight: 600; }
.note { color: var(--muted); border-left: 3px solid var(--rule); padding-left: 8px; }
@media (max-width: 600px) {
  body { font-size: 14px; }
  header, main { padding: 0 10px; }
  th, td { padding: 2px 5px; }
}
"""


def svg_size(svg: bytes) -> tuple[int, int] | None:
    """Width and height in CSS pixels from the root element (matplotlib writes points: 1pt = 4/3 px)."""
    head = svg[:2000].decode("utf-8", "replace")
    match = re.search(r'<svg[^>]*\swidth="([\d.]+)(pt|px)?"[^>]*\sheight="([\d.]+)(pt|px)?"', head)
    if not match:
        return None
    factor = 4 / 3 if match.group(2) == "pt" else 1
    return round(float(match.group(1)) * factor), round(float(match.group(3)) * factor)


def _cell(cell: Cell, tag: str = "td") -> str:
    classes = " ".join(c for c in ("num" if cell.numeric else "", f"flag-{cell.flag}" if cell.flag else "") if c)
    attrs = (f' class="{classes}"' if classes else "") + (f' data-key="{escape(cell.key)}"' if cell.key else "")
    return f"<{tag}{attrs}>{escape(cell.text)}</{tag}>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    return (f'<div class="table-wrap"><table><caption>{escape(table.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table></div>")


def _plot(plot: Plot) -> str:
    size = svg_size(plot.svg)
    dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
    data = base64.b64encode(plot.svg).decode("ascii")
    return (f'<figure id="{escape(plot.name)}"><img src="data:image/svg+xml;base64,{data}" '
            f'alt="{escape(plot.alt)}"{dims}><figcaption>{escape(plot.title)}</figcaption></figure>')


def _block(block) -> str:
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Plot):
        return _plot(block)
    if isinstance(block, Heading):
        return f"<h3>{escape(block.text)}</h3>"
    if isinstance(block, Note):
        return f'<p class="note">{escape(block.text)}</p>'
    if isinstance(block, Paragraph):
        return f"<p>{escape(block.text)}</p>"
    raise TypeError(f"no HTML for {type(block).__name__}")


def _section(section: Section) -> str:
    inner = "\n".join(_block(b) for b in section.blocks)
    return f'<section id="{escape(section.id)}"><h2>{escape(section.title)}</h2>\n{inner}\n</section>'


def render_html(report: Report) -> str:
    nav = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in report.sections)
    facts = "".join(f'<p class="facts">{escape(f)}</p>' for f in report.facts)
    sections = "\n".join(_section(s) for s in report.sections)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<link rel="icon" href="data:,">
<title>{escape(report.title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header><h1>{escape(report.title)}</h1>{facts}<nav>{nav}</nav></header>
<main>
{sections}
</main>
</body>
</html>
"""
