"""Shared printing for commands: rich on stderr for people, JSON on stdout for machines."""

from __future__ import annotations

import contextlib
from typing import Iterator

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True)
stdout = Console()


def print_json(obj) -> None:
    from mixdeploy.atomic import strict_json

    click.echo(strict_json(obj), nl=False)   # strict: a NaN would make the output unparseable


@contextlib.contextmanager
def stage_progress(enabled: bool = True) -> Iterator:
    """Yield a callback(stage, done, total) that drives one rich progress bar per stage. The bars
    start with the first stage, so a command that fails its checks prints no empty progress line."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    # markup=False: stage names carry file names (`parity: tflite:[x].tflite`), printed as they are
    columns = (TextColumn("{task.description}", markup=False), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with contextlib.ExitStack() as started:
        bars: list[Progress] = []
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if not bars:
                bars.append(started.enter_context(Progress(*columns, console=stderr, transient=False)))
            bar = bars[0]
            if stage not in tasks:
                for other in tasks.values():  # a new stage means the previous ones are done
                    bar.update(other, completed=bar.tasks[other].total)
                tasks[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(tasks[stage], completed=done, total=max(total, 1))

        yield update
        for task in tasks.values():
            bars[0].update(task, completed=bars[0].tasks[task].total)

def warn(message: str) -> None:
    """A stage's warning (guessed preprocessing, a cache that cannot be written) as one stderr line."""
    stderr.print(f"[yellow]warning:[/] {escape(message)}")
