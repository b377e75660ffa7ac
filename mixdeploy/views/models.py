"""`mixdeploy models` and `mixdeploy flops`: the zoo listing (mixdeploy.models.zoo) and a MacReport
(mixdeploy.flops) as tables."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def format_count(n: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def format_kernel_mix(mix: dict[int, int]) -> str:
    total = sum(mix.values()) or 1
    return " ".join(f"{k}:{100 * v / total:.0f}" for k, v in mix.items())


def show_zoo(listing: dict, console: Console) -> None:
    table = Table(title="mixdeploy model zoo")
    for col in ("model", "timm", "params", "MACs", "input", "dw kernels (% of channels)", "padding"):
        table.add_column(col, justify="right" if col in ("params", "MACs", "input") else "left",
                         no_wrap=col in ("model", "timm", "MACs"))  # names never truncated on narrow terminals
    for r in listing["models"]:
        padding = "TF same" if r["name"].startswith("tf-") else "symmetric"
        table.add_row(r["name"], r["timm"], format_count(r["params"]), format_count(r["macs"]),
                      str(r["input_size"]), format_kernel_mix(r["kernel_mix"]), padding)
    console.print(table)
    for b in listing["bundled_checkpoints"]:
        if "error" in b:   # a damaged bundled file is named, not hidden, and does not hide the zoo
            console.print(escape(f"Bundled checkpoint {b['name']}: unreadable ({b['error']})"), style="red")
            continue
        console.print(f"Bundled checkpoint [bold]{escape(b['name'])}[/]: "
                      + escape(f"{b['model']}, {b['num_classes']} classes"
                               + (f", {b['dataset']}" if b.get("dataset") else "")
                               + (f", top-1 {b['test_top1']}%" if b.get("test_top1") is not None else "")))
    console.print("MACs: conv/linear MACs + BN/activation/elementwise ops (`mixdeploy flops --help`). "
                  "Also: [bold]timm:<name>[/] for any timm model (needs timm installed).")


def show_flops(report, max_macs: int | None, within: bool, console: Console) -> None:
    console.print(f"[bold]{escape(str(report.source))}[/] at {report.input_size}x{report.input_size}: "
                  f"params {format_count(report.params)} ({report.params:,}), "
                  f"MACs {format_count(report.total)} ({report.total:,}); "
                  f"conv+linear only {format_count(report.conv_linear_only)}")
    for title, data in (("per stage", report.by_stage), ("per op type", report.by_op_type)):
        table = Table(title=title)
        table.add_column("stage" if title == "per stage" else "op type")
        table.add_column("MACs", justify="right")
        table.add_column("share", justify="right")
        for key, value in data.items():
            table.add_row(escape(str(key)), format_count(value), f"{100 * value / max(report.total, 1):.1f}%")
        console.print(table)
    if max_macs is not None:
        verdict = "[green]within[/]" if within else "[red]OVER[/]"
        console.print(f"budget {format_count(max_macs)}: {verdict}")
    if not within:   # on stderr: a CI log shows why the job failed even when stdout goes elsewhere
        click.secho(f"over budget: {format_count(report.total)} MACs > {format_count(max_macs)}", fg="red", err=True)
