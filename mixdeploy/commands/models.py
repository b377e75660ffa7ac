"""`mixdeploy models` (the zoo) and `mixdeploy flops` (params/MACs, with a budget gate)."""

from __future__ import annotations

import json

import click
from rich.console import Console

from mixdeploy.commands._options import CountParam


@click.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool):
    """List the model zoo: params, MACs at the default input size, depthwise kernel mix."""
    from mixdeploy.models.zoo import zoo_listing
    from mixdeploy.views.models import show_zoo

    listing = zoo_listing()
    if as_json:
        click.echo(json.dumps(listing, indent=2))
    else:
        show_zoo(listing, Console())


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
    from mixdeploy.flops import budget_verdict, count_macs
    from mixdeploy.views.models import show_flops

    if model.lower().endswith(".onnx") and (weights or num_classes):
        raise click.UsageError("--weights/--num-classes apply to torch models, not to an ONNX file")
    report = count_macs(model, input_size, weights=weights, num_classes=num_classes)
    verdict = budget_verdict(report, max_macs)
    if as_json:
        click.echo(json.dumps(verdict, indent=2))
    else:
        show_flops(report, max_macs, verdict["within_budget"], Console())
    if not verdict["within_budget"]:
        ctx.exit(1)
