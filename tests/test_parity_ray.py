"""`mixdeploy parity --ray`: a local Ray cluster computes the local run's logits and metrics bit for bit,
survives a worker killed mid-run, and a missing Ray is a clear set-up error.

Lean on purpose (2 cores): 2 one-thread workers, the 32-px checkpoint and its fp32/int8 TFLite.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from mixdeploy import data, parity

IMAGES = 2000
BATCH = 64
SHARD_BATCHES = 4                # 8 shards of 256 images over 2 workers
TIMING_KEYS = ("seconds",)       # per-backend wall time: the only numbers allowed to differ


def _comparable(result_dict: dict) -> str:
    """The result's JSON without timing and cluster facts, as text: equal means bit-identical metrics."""
    d = json.loads(json.dumps(result_dict))
    d.pop("cluster", None)
    for metrics in [d["reference"], *d["backends"]]:
        for key in TIMING_KEYS:
            metrics.pop(key)
    return json.dumps(d, sort_keys=True)


# ---------------------------------------------------------------- the CLI (first: `--ray local` starts its own cluster)


def _write_list_file(root: Path, count: int) -> Path:
    """`count` Fashion-MNIST test images as PNG files in class folders, listed with relative paths."""
    raw, labels = data.load_fashion_mnist_raw("test")
    lines = []
    for i in range(count):
        path = Path(f"class{labels[i]}") / f"{i:05d}.png"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(raw[i]).save(root / path)
        lines.append(f"{path} {labels[i]}")
    (root / "val.txt").write_text("# path label\n" + "\n".join(lines) + "\n")
    return root / "val.txt"


def _parity_cli(*args):
    return CliRunner().invoke(cli, ["parity", *map(str, args)], catch_exceptions=False)


def test_cli_ray_local_reads_a_list_file_on_the_workers_and_matches_the_local_run(trained_checkpoint, models,
                                                                                 tmp_path):
    ray = pytest.importorskip("ray", reason="Ray tests need the extra: pip install -e '.[ray]'")
    connected_before = ray.is_initialized()
    list_file = _write_list_file(tmp_path, 128)
    common = [trained_checkpoint, "--tflite", models[0], "--tflite", models[1], "--data", list_file, "--json",
              "--no-blame", "--min-top1-agreement", "0.9", "--max-top1-drop", "5"]
    local = _parity_cli(*common)
    distributed = _parity_cli(*common, "--ray", "local")
    assert local.exit_code == 0 and distributed.exit_code == 0, distributed.output
    local_json, ray_json = json.loads(local.stdout), json.loads(distributed.stdout)
    assert local_json["images"] == 128 and local_json["cluster"] is None
    assert _comparable(ray_json) == _comparable(local_json)
    cluster = ray_json["cluster"]
    assert cluster["address"] == "local" and cluster["nodes"] >= 1 and cluster["cpus"] >= 1
    assert cluster["images_per_second"] > 0 and cluster["wall_seconds"] > 0
    assert ray.is_initialized() == connected_before   # a cluster it started, it stopped


def test_cli_ray_without_ray_installed_says_how_to_install(trained_checkpoint, models, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` now raises ImportError
    result = CliRunner().invoke(cli, ["parity", str(trained_checkpoint), "--tflite", models[0], "--data",
                                      "fashion-mnist", "--limit", "8", "--ray", "local"])
    assert result.exit_code == 2
    assert "--ray needs Ray" in result.output and "pip install -e '.[ray]'" in result.output
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- the library, on one cluster for the module


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray tests need the extra: pip install -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models(trained_artifacts):
    return [str(trained_artifacts.tflite_fp32), str(trained_artifacts.tflite_int8)]


@pytest.fixture(scope="module")
def local_run(trained_model, models):
    """The single-process run on the first 2000 test images: logits per backend and the result."""
    images = data.load_images("fashion-mnist", trained_model.preprocessing, limit=IMAGES)
    runs = parity.run_backends(trained_model, models, images=images.images, batch_size=BATCH, num_threads=1)
    result = parity.score(trained_model, runs, images.labels, images.class_names, images.source,
                          preprocessing=trained_model.preprocessing.to_dict())
    return runs, result


def test_ray_logits_and_metrics_are_bit_identical_to_the_local_run(ray_cluster, trained_model, models, local_run):
    from mixdeploy import parity_ray

    local_runs, local_result = local_run
    index = data.index_images("fashion-mnist", limit=IMAGES)   # workers read the IDX file themselves
    runs, facts = parity_ray.ray_backend_runs(trained_model, models, None, index, batch_size=BATCH, num_threads=1,
                                              shard_batches=SHARD_BATCHES)
    assert [r.backend for r in runs] == [r.backend for r in local_runs] == \
        ["pytorch", "tflite:model_fp32.tflite", "tflite:model_int8.tflite"]
    for ours, theirs in zip(runs, local_runs):
        assert ours.logits.dtype == theirs.logits.dtype and ours.logits.shape == (IMAGES, 10)
        np.testing.assert_array_equal(ours.logits, theirs.logits, err_msg=ours.backend)
    result = parity.score(trained_model, runs, index.labels, index.class_names, index.source,
                          preprocessing=trained_model.preprocessing.to_dict())
    assert _comparable(result.to_dict()) == _comparable(local_result.to_dict())
    # the run really was spread: 2 workers, 8 shards, both workers computed some
    assert (facts.workers, facts.shards, facts.shard_images, facts.worker_processes) == (2, 8, 256, 2)
    assert facts.nodes == 1 and facts.cpus == 2 and facts.threads == {"torch": 1, "onnx": 1, "tflite": 1}


def _descends_from_us(pid: int) -> bool:
    me = os.getpid()
    while pid > 1:
        if pid == me:
            return True
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return False
    return False


def _busy_workers() -> list[int]:
    """Our Ray cluster's ShardWorker processes that are running a shard right now (Ray names them so)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ShardWorker.run") and _descends_from_us(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_worker_killed_mid_shard_is_restarted_and_the_result_is_the_same(ray_cluster, trained_model, models,
                                                                           local_run):
    from mixdeploy import parity_ray

    killed = []

    def progress(stage, done, total):
        # Kill the first worker seen busy on a shard: Ray must restart it and run that shard again.
        busy = _busy_workers() if not killed and done < total else []
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    result = parity_ray.run_parity_ray(trained_model, models, None, "fashion-mnist", limit=IMAGES, batch_size=BATCH,
                                       num_threads=1, shard_batches=SHARD_BATCHES, progress=progress)
    assert killed, "no worker was busy when a shard finished: nothing was killed"
    assert _comparable(result.to_dict()) == _comparable(local_run[1].to_dict())
    assert result.cluster["shards"] == 8 and result.images == IMAGES
