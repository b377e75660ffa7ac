"""The report as Markdown for a CI comment: the same tables, plots as links into the HTML page.

CI comments cannot hold images without a host for them, so each plot is a link to its figure
in the HTML report (`html_link`, a path relative to the Markdown file or a URL). Long tables
are cut to their first rows, with the count of the rest.
"""

from __future__ import annotations

from mixdeploy.report.content import Cell, Heading, Note, Paragraph, Plot, Report, Section, Table

MAX_ROWS = 15


def _cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if cell.flag and text else text


def _table(table: Table, html_link: str | None) -> list[str]:
    lines = [f"**{table.caption}**", "", "| " + " | ".join(h.replace("|", "\\|") for h in table.headers) + " |",
             "|" + "|".join("---:" if any(r[i].numeric for r in table.rows if i < len(r)) else "---"
                            for i in range(len(table.headers))) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows[:MAX_ROWS]]
    if len(table.rows) > MAX_ROWS:
        more = f"{len(table.rows) - MAX_ROWS} more rows"
        lines += ["", f"_{more}" + (f" in [the HTML report]({html_link})_" if html_link else "_")]
    return lines + [""]


def _block(block, html_link: str | None) -> list[str]:
    if isinstance(block, Table):
        return _table(block, html_link)
    if isinstance(block, Plot):
        where = f"[{block.title}]({html_link}#{block.name})" if html_link else block.title
        return [f"Plot: {where}", ""]
    if isinstance(block, Heading):
        return [f"### {block.text}", ""]
    if isinstance(block, Note):
        return [f"> {block.text}", ""]
    if isinstance(block, Paragraph):
        return [block.text, ""]
    raise TypeError(f"no Markdown for {type(block).__name__}")


def _section(section: Section, html_link: str | None) -> list[str]:
    lines = [f"## {section.title}", ""]
    for block in section.blocks:
        lines += _block(block, html_link)
    return lines


def render_markdown(report: Report, html_link: str | None = None) -> str:
    lines = [f"# {report.title}", "", *(f"- {f}" for f in report.facts)]
    if html_link:
        lines.append(f"- plots: [the HTML report]({html_link})")
    lines.append("")
    for section in report.sections:
        lines += _section(section, html_link)
    return "\n".join(lines).rstrip() + "\n"
