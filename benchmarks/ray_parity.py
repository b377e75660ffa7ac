"""Parity throughput, single process vs Ray: images/s on this machine and the gain per added node.

    python benchmarks/ray_parity.py                    # 4,000 Fashion-MNIST test images
    python benchmarks/ray_parity.py --images 2000 --out /tmp/ray_parity.md

The bundled 32-px MixNet-S checkpoint, its rewritten ONNX (`split` lowering) and fp32/int8 TFLite
(64 Fashion-MNIST training images for calibration), built once into a temporary folder as
tests/conftest.py builds them. Every run computes all four backends (PyTorch, onnxruntime, fp32
and int8 LiteRT) on the same images, from the IDX file to the logits, preprocessing included:

  local, default threads   what `mixdeploy parity` does without --ray
  local, 1 thread          the same, every runtime pinned to 1 thread
  ray, 1 node x 2 CPUs     `--ray local --threads 1`: 2 one-thread workers on this machine
  ray, 2 nodes x 1 CPU     two Ray nodes (ray.cluster_utils.Cluster, as `ray start --head
                           --num-cpus 1` + `ray start --address ... --num-cpus 1`): a pool of
                           1 worker (one node's worth), then 2 workers (one per node)

Ray times are pool start to last shard (models loaded in every worker, included); the cluster is
already running, as it would be. Every Ray run's logits are checked equal, bit for bit, to the
local 1-thread run's. Ratios are within this one run; the machine's load average is printed
with them (this 2-core machine is shared, so absolute numbers move between runs).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from mixdeploy import data, parity, parity_ray
from mixdeploy.atomic import write_text_atomic
from mixdeploy.models import load_model

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist.pt"
RESULTS = REPO / "benchmarks" / "results" / "ray_parity.md"


def build_models(loaded, out: Path) -> tuple[Path, list[Path]]:
    """(rewritten ONNX, [fp32 TFLite, int8 TFLite]) of the checkpoint, as tests/conftest.py builds them."""
    import onnx

    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    calibration = data.load_images("fashion-mnist", loaded.preprocessing, limit=64, split="train").images
    exported = export_onnx(loaded.module, loaded.preprocessing.input_size, out / "model.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="split").model
    onnx.save(rewritten, str(out / "model.opt.onnx"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(rewritten, out / "model_fp32.tflite", precision="fp32")
        convert_onnx(rewritten, out / "model_int8.tflite", precision="int8", calibration=calibration, io_dtype="int8")
    return out / "model.opt.onnx", [out / "model_fp32.tflite", out / "model_int8.tflite"]


def local_run(loaded, onnx_path, tflite, count: int, threads: int | None) -> tuple[dict, list]:
    began, cpu_began = time.perf_counter(), time.process_time()
    images = data.load_images("fashion-mnist", loaded.preprocessing, limit=count)
    runs = parity.run_backends(loaded, tflite, onnx_path, images.images, num_threads=threads)
    return {"seconds": time.perf_counter() - began, "cpu_seconds": time.process_time() - cpu_began}, runs


def ray_run(loaded, onnx_path, tflite, count: int, reference, workers: int | None = None) -> dict:
    index = data.index_images("fashion-mnist", limit=count)
    runs, facts = parity_ray.ray_backend_runs(loaded, tflite, onnx_path, index, num_threads=1, workers=workers)
    identical = all(np.array_equal(a.logits, b.logits) for a, b in zip(runs, reference, strict=True))
    return {"seconds": facts.wall_seconds, "cpu_seconds": facts.worker_cpu_seconds, "workers": facts.workers,
            "nodes": facts.nodes, "identical": identical,
            # the share of the pool's wall time its workers spent on shards (the rest: start-up, model
            # loading, scheduling, transfers) and the share of a core they got while on them
            "busy": facts.worker_seconds / (facts.workers * facts.wall_seconds),
            "cpu_share": facts.worker_cpu_seconds / facts.worker_seconds}


def measure(count: int) -> list[dict]:
    import ray
    from ray.cluster_utils import Cluster

    loaded = load_model(str(CHECKPOINT))
    onnx_path, tflite = build_models(loaded, Path(tempfile.mkdtemp(prefix="ray-parity-bench-")))
    rows = []

    def add(name, row):
        rows.append({"run": name, "images_per_second": count / row["seconds"], "load": os.getloadavg()[0],
                     "workers": "-", "nodes": "-", "identical": None, "busy": None, "cpu_share": None, **row})
        print(f"{name}: {count / row['seconds']:.1f} images/s ({row['seconds']:.1f} s)", flush=True)

    add("local, default threads", local_run(loaded, onnx_path, tflite, count, None)[0])
    timing, reference = local_run(loaded, onnx_path, tflite, count, 1)
    add("local, 1 thread", timing)

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        add("ray, 1 node x 2 CPUs, 2 workers", ray_run(loaded, onnx_path, tflite, count, reference))
    finally:
        ray.shutdown()

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        for workers in (1, 2):
            add(f"ray, 2 nodes x 1 CPU, {workers} worker{'s' if workers > 1 else ''}",
                ray_run(loaded, onnx_path, tflite, count, reference, workers=workers))
    finally:
        ray.shutdown()
        cluster.shutdown()
    return rows


def _pct(v) -> str:
    return "-" if v is None else f"{v * 100:.0f}%"


def to_markdown(rows: list[dict], count: int) -> str:
    by_name = {r["run"]: r for r in rows}
    base, single = by_name["local, default threads"], by_name["local, 1 thread"]
    one, two = by_name["ray, 2 nodes x 1 CPU, 1 worker"], by_name["ray, 2 nodes x 1 CPU, 2 workers"]
    per_core = count / two["cpu_seconds"]                        # one worker on a core of its own
    startup = two["seconds"] * (1 - two["busy"])                  # pool wall time not spent on shards
    lines = [
        "# Parity throughput: single process vs Ray (generated by benchmarks/ray_parity.py)",
        "",
        f"{count} Fashion-MNIST test images, MixNet-S 32 px, 4 backends per image (PyTorch, onnxruntime, "
        f"fp32 and int8 LiteRT), preprocessing included; a {os.cpu_count()}-CPU machine shared with other jobs "
        "(`load`: its 1-minute load average after each run). `busy`: share of the pool's wall time its "
        "workers spent on shards (the rest is start-up: processes, imports, model loading); `core`: share "
        "of a core they got meanwhile.",
        "",
        "| run | workers | nodes | images/s | seconds | vs local default | vs local 1 thread | "
        "images per CPU-second | busy | core | logits = local | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        same = "-" if r["identical"] is None else ("yes" if r["identical"] else "**NO**")
        lines.append(f"| {r['run']} | {r['workers']} | {r['nodes']} | {r['images_per_second']:.1f} | "
                     f"{r['seconds']:.1f} | {r['images_per_second'] / base['images_per_second']:.2f}x | "
                     f"{r['images_per_second'] / single['images_per_second']:.2f}x | {count / r['cpu_seconds']:.0f} | "
                     f"{_pct(r['busy'])} | {_pct(r['cpu_share'])} | {same} | {r['load']:.1f} |")
    lines += [
        "",
        f"- Measured on two 1-CPU Ray nodes of this machine: 2 workers (one per node) run at "
        f"**{two['images_per_second'] / one['images_per_second']:.2f}x** the images/s of 1 worker on one node.",
        f"- Estimate per added node, from that 2-node run but free of this machine's load: a worker computes "
        f"**{per_core:.0f} images per CPU-second** (the single process: {count / single['cpu_seconds']:.0f}), "
        f"so each added node with one free core adds about {per_core:.0f} images/s, after a start-up of about "
        f"{startup:.1f} s per run: N such nodes take about {startup:.1f} s + images / (N x {per_core:.0f}) s, "
        "as long as shards outnumber workers.",
        f"- A core share under 100% is other jobs taking the cores: with a load of {rows[-1]['load']:.1f} on "
        f"{os.cpu_count()} cores, more workers on this machine cannot get more CPU.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = measure(args.images)
    markdown = to_markdown(rows, args.images)
    write_text_atomic(args.out, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
