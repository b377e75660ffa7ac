"""`mixdeploy inspect FILE.tflite`: what is inside a TFLite model (ops, types, concat scales, slow kernels)."""

from __future__ import annotations

import click

from mixdeploy.commands._console import print_json, stdout


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the inspection as JSON on stdout.")
@click.option("--all-concats", is_flag=True, help="List every CONCATENATION, not only mismatched ones.")
def inspect(path, as_json, all_concats):
    """Show the op histogram, tensor types, I/O, concat scales and large depthwise convs of PATH."""
    from mixdeploy.tflite.inspect import inspect_tflite
    from mixdeploy.views import inspect as view

    result = inspect_tflite(path)
    if as_json:
        print_json(result.to_dict())
    else:
        view.show(result, all_concats, stdout)
