"""Shared printing for commands: rich on stderr for people, JSON on stdout for machines."""

from __future__ import annotations

import contextlib
import json
from typing import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)
stdout = Console()


def print_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def stage_progress(enabled: bool = True) -> Iterator:
    """Yield a callback(stage, done, total) that drives one rich progress bar per stage."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                for other in tasks.values():  # a new stage means the previous ones are done
                    bar.update(other, completed=bar.tasks[other].total)
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update
        for task in tasks.values():
            bar.update(task, completed=bar.tasks[task].total)
