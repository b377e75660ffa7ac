"""`mixdeploy models`: every registry model's size and kernel mix, and the checkpoints shipped with
mixdeploy, as one listing (the `--json` output; mixdeploy.views.models draws the tables)."""

from __future__ import annotations


def zoo_listing() -> dict:
    from mixdeploy.flops import count_macs
    from mixdeploy.models import REGISTRY, load_model

    rows = []
    for name, info in REGISTRY.items():
        loaded = load_model(name)
        report = count_macs(loaded)
        rows.append({"name": name, "timm": info.timm_name, "params": loaded.params, "macs": report.total,
                     "conv_linear_macs": report.conv_linear_only, "input_size": loaded.preprocessing.input_size,
                     "kernel_mix": loaded.kernel_mix, "description": info.description})
    return {"models": rows, "bundled_checkpoints": bundled_rows(), "also": "timm:<name> for any timm model"}


def bundled_rows() -> list[dict]:
    """One row per checkpoint in mixdeploy/weights/: its metadata, or the error that makes it unreadable."""
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
