"""`mixdeploy models`: the zoo table/JSON, against timm's parameter counts, and bundled checkpoints."""

import json

import torch
from click.testing import CliRunner
from timm_oracle import timm

from cli import cli
from mixdeploy.models import save_checkpoint, sources


def test_models_command_json():
    result = CliRunner().invoke(cli, ["models", "--json"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.output)["models"]}
    assert list(rows) == ["mixnet-s", "mixnet-m", "mixnet-l", "tf-mixnet-s", "tf-mixnet-m", "tf-mixnet-l"]
    for name, row in rows.items():
        assert row["params"] == sum(p.numel() for p in timm.create_model(row["timm"]).parameters())
        assert row["conv_linear_macs"] < row["macs"]
    assert set(rows["mixnet-s"]["kernel_mix"]) == {"3", "5", "7", "9", "11"}


def test_models_table_lists_bundled_checkpoints(tmp_path, monkeypatch):
    model = timm.create_model("mixnet_s", num_classes=10)
    save_checkpoint(tmp_path / "mixnet_s_fashion_mnist.pt", model, model="mixnet-s", num_classes=10, half=True,
                    extra={"dataset": "fashion-mnist", "test_top1": 91.5})
    monkeypatch.setattr(sources, "WEIGHTS_DIR", tmp_path)
    result = CliRunner().invoke(cli, ["models"], catch_exceptions=False, terminal_width=200)
    assert result.exit_code == 0
    assert "mixnet-s-fashion-mnist" in result.output and "top-1 91.5%" in result.output
    for name in ("mixnet-s", "tf-mixnet-l"):
        assert name in result.output
    # and the bundled name is a source by itself
    flops = CliRunner().invoke(cli, ["flops", "mixnet-s-fashion-mnist", "--json", "--input-size", "64"])
    assert flops.exit_code == 0 and json.loads(flops.output)["by_stage"]["classifier"] == 1536 * 10


def test_zoo_names_are_listed_without_importing_tensorflow():
    import subprocess
    import sys

    code = "import sys; from cli import main; import mixdeploy.commands.models; import mixdeploy.flops; " \
           "import mixdeploy.models; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert torch.__version__  # torch is the only heavy import the zoo needs
