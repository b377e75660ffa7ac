"""The report as data: sections of headings, text, tables and plots, before any rendering.

Built once (mixdeploy.report.build) and rendered twice (HTML, Markdown), so both say the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Cell:
    text: str
    key: str | None = None     # a stable name for this number (data-key in HTML), for scripts and tests
    flag: str | None = None    # "worse" | "better" | "slow": styled, and the text says it too
    numeric: bool = False


@dataclass
class Table:
    caption: str
    headers: list[str]
    rows: list[list[Cell]]


@dataclass
class Plot:
    name: str                  # file stem and anchor, e.g. "latency-vs-macs"
    title: str
    alt: str                   # what the plot shows, for screen readers and broken images
    svg: bytes


@dataclass
class Heading:
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Note:
    """A piece that could not be shown, and what would bring it."""

    text: str


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> Section:
        self.blocks.extend(b for b in blocks if b is not None)
        return self

    @property
    def plots(self) -> list[Plot]:
        return [b for b in self.blocks if isinstance(b, Plot)]


@dataclass
class Report:
    title: str
    facts: list[str]           # one line each: inputs, baseline, when
    sections: list[Section]


def num(text: str, key: str | None = None, flag: str | None = None) -> Cell:
    return Cell(text, key=key, flag=flag, numeric=True)


def txt(text, key: str | None = None, flag: str | None = None) -> Cell:
    return Cell(str(text), key=key, flag=flag)
