"""`mixdeploy models` (the zoo) and `mixdeploy flops` (params/MACs, with a budget gate)."""

from __future__ import annotations

import json
import re

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def format_count(n: float) -> str:
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def format_kernel_mix(mix: dict[int, int]) -> str:
    total = sum(mix.values()) or 1
    return " ".join(f"{k}:{100 * v / total:.0f}" for k, v in mix.items())


class CountParam(click.ParamType):
    """'600M', '1.2G', '250k', '600000000' -> int."""

    name = "count"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kKmMgGtT]?)\s*", str(value))
        if not match:
            self.fail(f"{value!r} is not a count; use e.g. 600M, 1.2G or 600000000", param, ctx)
        return int(round(float(match.group(1)) * SUFFIXES[match.group(2).upper()]))


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool):
    """List the model zoo: params, MACs at the default input size, depthwise kernel mix."""
    from mixdeploy.flops import count_macs
    from mixdeploy.models import REGISTRY, load_model

    rows = []
    for name, info in REGISTRY.items():
        loaded = load_model(name)
        report = count_macs(loaded)
        rows.append({"name": name, "timm": info.timm_name, "params": loaded.params, "macs": report.total,
                     "conv_linear_macs": report.conv_linear_only, "input_size": loaded.preprocessing.input_size,
                     "kernel_mix": loaded.kernel_mix, "description": info.description})
    bundled = _bundled_rows()
    if as_json:
        click.echo(json.dumps({"models": rows, "bundled_checkpoints": bundled,
                               "also": "timm:<name> for any timm model"}, indent=2))
        return
    table = Table(title="mixdeploy model zoo")
    for col in ("model", "timm", "params", "MACs", "input", "dw kernels (% of channels)", "padding"):
        table.add_column(col, justify="right" if col in ("params", "MACs", "input") else "left",
                         no_wrap=col in ("model", "timm", "MACs"))  # names never truncated on narrow terminals
    for r in rows:
        padding = "TF same" if r["name"].startswith("tf-") else "symmetric"
        table.add_row(r["name"], r["timm"], format_count(r["params"]), format_count(r["macs"]),
                      str(r["input_size"]), format_kernel_mix(r["kernel_mix"]), padding)
    console = Console()
    console.print(table)
    for b in bundled:
        if "error" in b:   # a damaged bundled file is named, not hidden, and does not hide the zoo
            console.print(escape(f"Bundled checkpoint {b['name']}: unreadable ({b['error']})"), style="red")
            continue
        console.print(f"Bundled checkpoint [bold]{escape(b['name'])}[/]: "
                      + escape(f"{b['model']}, {b['num_classes']} classes"
                               + (f", {b['dataset']}" if b.get("dataset") else "")
                               + (f", top-1 {b['test_top1']}%" if b.get("test_top1") is not None else "")))
    console.print("MACs: conv/linear MACs + BN/activation/elementwise ops (`mixdeploy flops --help`). "
                  "Also: [bold]timm:<name>[/] for any timm model (needs timm installed).")


def _bundled_rows() -> list[dict]:
    from mixdeploy.errors import MixdeployError
    from mixdeploy.models.sources import bundled_checkpoints, read_checkpoint

    rows = []
    for name, path in bundled_checkpoints().items():
        try:
            meta = read_checkpoint(path).metadata
        except MixdeployError as err:  # a broken shipped file should not hide the zoo
            rows.append({"name": name, "path": str(path), "error": str(err)})
            continue
        rows.append({"name": name, "path": str(path), "model": meta.get("model"),
                     "num_classes": meta.get("num_classes"), "dataset": meta.get("dataset"),
                     "test_top1": meta.get("test_top1")})
    return rows


@click.command("flops")
@click.argument("model")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint to load (sets num_classes).")
@click.option("--num-classes", type=click.IntRange(min=1), help="Classifier size (default: from weights, else 1000).")
@click.option("--input-size", type=click.IntRange(min=8), help="Square input side (default: the model's).")
@click.option("--max-macs", type=CountParam(), help="Budget, e.g. 600M or 1.2G: exit 1 when the model is over it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def flops(ctx, model, weights, num_classes, input_size, max_macs, as_json):
    """Params and MACs of MODEL (a zoo name, timm:<name>, a checkpoint or FILE.onnx), per stage and op type.

    MACs = conv/linear multiply-accumulates + one op per output element of BatchNorm, activations,
    SE/elementwise mul/add and pooling (the convention that matches the MixNet paper's FLOPS).
    """
    from mixdeploy.flops import count_macs

    if model.lower().endswith(".onnx"):
        if weights or num_classes:
            raise click.UsageError("--weights/--num-classes apply to torch models, not to an ONNX file")
        report = count_macs(model, input_size)
    else:
        from mixdeploy.models import load_model

        loaded = load_model(model, weights=weights, num_classes=num_classes, input_size=input_size)
        report = count_macs(loaded)
    within = max_macs is None or report.total <= max_macs
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "max_macs": max_macs, "within_budget": within}, indent=2))
    else:
        _print_report(report, max_macs, within)
    if not within:
        if not as_json:
            click.secho(f"over budget: {format_count(report.total)} MACs > {format_count(max_macs)}",
                        fg="red", err=True)
        ctx.exit(1)


def _print_report(report, max_macs, within):
    console = Console()
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
