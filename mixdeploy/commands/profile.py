"""`mixdeploy profile FILE.tflite`: where the milliseconds go, per op and per op class, beside each
class's ceiling on this machine and the roofline (docs/bench.md, `profile`)."""

from __future__ import annotations

import click

from mixdeploy.commands._console import print_json, stage_progress, stderr, stdout


@click.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Interleaved rounds (each times every op once).")
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="Invokes back to back per sample of a single-op model (its data in cache).")
@click.option("--from-op-profile", "op_profile", type=click.Path(dir_okay=False),
              help="Instead of timing here: a phone's op profile, `mixdeploy bench PATH --device pixel "
                   "--op-profile --json` output (or benchmark_model's stdout).")
@click.option("--top", type=click.IntRange(min=0), default=15, show_default=True, help="Slowest ops listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON on stdout.")
def profile(path, threads, runs, warmup, repeat, op_profile, top, as_json):
    """Time each op of PATH alone (LiteRT/XNNPACK), sum per op class, and set each class's GMAC/s
    beside its ceiling on this machine (one of its ops, enlarged); the roofline beside the whole model."""
    from mixdeploy.bench.profile import profile
    from mixdeploy.views import profile as view

    with stage_progress(not as_json and not op_profile) as progress:
        result = profile(path, op_profile, threads=threads, runs=runs, warmup=warmup, repeat=repeat,
                         progress=progress)
    if as_json:
        print_json(result.to_dict())
    else:
        view.show(result, top, stdout, notes_to=stderr)
