"""`mixdeploy parity --ray`: the local parity run, its images split into shards over a Ray cluster.

The driver lists the images (`data.index_images`: file names, labels, counts; no pixels) and
hands the index, the PyTorch model and the ONNX/TFLite paths once to a pool of Ray actors. A
shard is a range of image indices: the actor reads those images itself from the path every node
shares, preprocesses them (`data.load_slice`, the local run's code) and runs them through every
backend (`parity.backend_runners`, built once per actor). The logits come back per shard, are put
in image order, and the metrics are made once, by `parity.score`, as in the local run.

Bit for bit the local run's numbers: PyTorch's output for an image depends on what else is in
its batch, so shards are whole multiples of the local batch size starting on its batch
boundaries (every image is computed in the same batch as locally), and every worker is given
the local run's per-runtime thread counts explicitly instead of its own node's defaults.

A worker lost mid-run (a crash, a node gone) is restarted by Ray and its shard run again
(`max_restarts` / `max_task_retries`): shards are pure functions of their index range.

Ray is an optional extra (`pip install -e '.[ray]'`), imported only here and only when asked for.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from mixdeploy import data, parity
from mixdeploy.errors import MixdeployError

RAY_MISSING = ("--ray needs Ray, which is not installed here. Install the extra with "
               "`pip install -e '.[ray]'` in the mixdeploy checkout (or `pip install ray`), "
               "on this machine and on every node of the cluster; or drop --ray for the local run")
SHARDS_PER_WORKER = 4      # a few shards per worker: a slow or restarted worker delays the end little
MAX_RESTARTS = 3           # Ray restarts a dead worker (and reruns its shard) this many times
PROGRESS_STAGE = "ray: shards"


@dataclass(frozen=True)
class Threads:
    """Per-runtime thread counts, resolved on the driver as the local run would pick them."""
    torch: int
    onnx: int
    tflite: int

    @classmethod
    def resolve(cls, num_threads: int | None) -> "Threads":
        import torch

        from mixdeploy.runtimes import default_tflite_threads, default_torch_threads

        if num_threads:
            return cls(num_threads, num_threads, num_threads)
        # torch and onnxruntime both default to the number of physical cores; a Ray worker's own
        # default would be its node's (or OMP_NUM_THREADS=1, which Ray sets): pin the driver's.
        return cls(torch=default_torch_threads(), onnx=torch.get_num_threads(), tflite=default_tflite_threads())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClusterFacts:
    address: str
    nodes: int                  # alive nodes in the cluster
    cpus: float                 # CPUs in the cluster
    workers: int                # actors in the pool
    cpus_per_worker: int
    worker_processes: int       # distinct processes that ran shards: > workers when one was restarted
    shards: int
    shard_images: int
    batch_size: int
    threads: dict
    wall_seconds: float         # pool start (models loaded) to the last shard back
    images_per_second: float
    worker_seconds: float       # summed over shards: reading, preprocessing, every backend (no start-up)
    worker_cpu_seconds: float   # the CPU time of that: below worker_seconds when workers wait for a core

    def to_dict(self) -> dict:
        return asdict(self)


def import_ray():
    try:
        import ray
    except ImportError:
        raise MixdeployError(RAY_MISSING) from None
    return ray


def shard_ranges(count: int, batch_size: int, shard_batches: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of `shard_batches` whole batches each: the local run's batch boundaries."""
    step = batch_size * max(1, shard_batches)
    return [(start, min(count, start + step)) for start in range(0, count, step)]


def _auto_shard_batches(count: int, batch_size: int, workers: int) -> int:
    return max(1, math.ceil(math.ceil(count / batch_size) / (workers * SHARDS_PER_WORKER)))


def _connect(ray, address: str) -> bool:
    """Connect to (or start, for 'local') a Ray cluster; True when this call started the connection."""
    if ray.is_initialized():
        return False
    # Workers' prints and logs stay in Ray's log files: stdout is reserved for --json.
    options = {"log_to_driver": False, "logging_level": logging.WARNING}
    try:
        if address == "local":
            ray.init(address="local", include_dashboard=False, **options)
        else:
            ray.init(address=address, **options)
    except ConnectionError as err:
        hint = ("no Ray cluster is running here: start one with `ray start --head`, give its address "
                "(--ray HOST:PORT or ray://HOST:10001), or use --ray local") if address == "auto" else \
            "check the address (HOST:PORT of the head node, or ray://HOST:10001) and that the cluster is up"
        raise MixdeployError(f"cannot connect to Ray at {address!r} ({err}); {hint}") from None
    return True


class ShardWorker:
    """One Ray actor: the backends built once (on its first shard), then any number of shards.

    The model and the index come with each shard as object-store references (`shared`), fetched
    only on the first: a restarted actor fetches them again, from the copy the driver holds.
    Loading in `run` rather than `__init__` also turns a bad file into that task's MixdeployError.
    """

    def __init__(self, tflite_paths: list[str], onnx_path: str | None, threads: dict, batch_size: int):
        self.tflite_paths, self.onnx_path, self.threads, self.batch_size = tflite_paths, onnx_path, threads, batch_size
        self.model = self.index = self.runners = None

    def _load(self, shared: dict) -> None:
        import ray

        self.model, self.index = ray.get([shared["model"], shared["index"]])
        self.runners = [runner for runner, _ in parity.backend_runners(
            self.model, self.tflite_paths, self.onnx_path, num_threads=self.threads)]

    def run(self, shared: dict, start: int, stop: int) -> dict:
        import ray

        if self.runners is None:
            self._load(shared)
        shard_began, cpu_began = time.perf_counter(), time.process_time()
        images = data.load_slice(self.index, self.model.preprocessing, start, stop)
        logits, seconds = [], []
        for runner in self.runners:
            began = time.perf_counter()
            logits.append(runner.run(images, batch_size=self.batch_size))
            seconds.append(time.perf_counter() - began)
        return {"start": start, "logits": logits, "seconds": seconds, "backends": [r.name for r in self.runners],
                "shard_seconds": time.perf_counter() - shard_began, "cpu_seconds": time.process_time() - cpu_began,
                "process": (ray.get_runtime_context().get_node_id(), os.getpid())}


def _task_error(ray, err) -> MixdeployError:
    """A worker's own MixdeployError (bad image, missing file) keeps its message; anything else says where it came from."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, MixdeployError):
        return MixdeployError(str(cause), exit_code=cause.exit_code)
    if isinstance(err, ray.exceptions.RayActorError):
        return MixdeployError(f"a Ray worker kept dying (restarted up to {MAX_RESTARTS} times) and the run was given up ({err}). "
                              "Check the workers' memory and `ray logs`; every node needs mixdeploy installed "
                              "and the data and model files at the same paths", exit_code=1)
    return MixdeployError(f"a Ray worker failed: {type(cause or err).__name__}: {cause or err}", exit_code=1)


def _gather(ray, pool, shards, progress) -> list[dict]:
    """Every shard through the pool; results in image order."""
    results = []
    try:
        for done, result in enumerate(pool.map_unordered(lambda actor, shard: actor.run.remote(*shard), shards), start=1):
            results.append(result)
            if progress:
                progress(PROGRESS_STAGE, done, len(shards))
    except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as err:
        raise _task_error(ray, err) from None
    return sorted(results, key=lambda r: r["start"])


def _cluster_size(ray) -> tuple[int, float]:
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return nodes, float(ray.cluster_resources().get("CPU", 0))


def ray_backend_runs(model, tflite_paths, onnx_path, index: data.ImageIndex, address: str = "auto",
                     batch_size: int = 64, num_threads: int | None = None, workers: int | None = None,
                     shard_batches: int | None = None, progress=None) -> tuple[list[parity.BackendRun], ClusterFacts]:
    """The logits every backend gives on every image of `index`, computed on a Ray cluster.

    -> (one BackendRun per backend in `parity.backend_runners`' order, logits in image order;
    the cluster facts). BackendRun.seconds is that backend's compute time summed over the workers.
    """
    ray = import_ray()

    if len(index) == 0:
        raise MixdeployError("parity needs images; the data source lists none")
    threads = Threads.resolve(num_threads)
    started = _connect(ray, address)
    try:
        nodes, cpus = _cluster_size(ray)
        # The runtimes run one after the other: a worker needs the largest of their thread counts.
        cpus_per_worker = max(threads.torch, threads.onnx if onnx_path else 1, threads.tflite if tflite_paths else 1)
        if cpus < cpus_per_worker:
            raise MixdeployError(f"the Ray cluster has {cpus:g} CPUs but one worker needs {cpus_per_worker} "
                                 f"(the local run's thread count); pass --threads {max(1, int(cpus))}")
        pool_size = max(1, min(workers or int(cpus // cpus_per_worker), math.ceil(len(index) / batch_size)))
        ranges = shard_ranges(len(index), batch_size,
                              shard_batches or _auto_shard_batches(len(index), batch_size, pool_size))
        pool_size = min(pool_size, len(ranges))
        began = time.perf_counter()
        results = _run_pool(ray, model, tflite_paths, onnx_path, index, threads, batch_size, pool_size,
                            cpus_per_worker, ranges, progress)
        wall = time.perf_counter() - began
    finally:
        if started:
            ray.shutdown()

    # The workers name the backends; the paths are the caller's own (as the local run reports them).
    paths = [None, *([str(onnx_path)] if onnx_path else []), *map(str, tflite_paths)]
    runs = [parity.BackendRun(name, np.concatenate([r["logits"][i] for r in results]),
                              float(sum(r["seconds"][i] for r in results)), path)
            for i, (name, path) in enumerate(zip(results[0]["backends"], paths, strict=True))]
    facts = ClusterFacts(address=address, nodes=nodes, cpus=cpus, workers=pool_size, cpus_per_worker=cpus_per_worker,
                         worker_processes=len({r["process"] for r in results}), shards=len(ranges),
                         shard_images=ranges[0][1] - ranges[0][0], batch_size=batch_size,
                         threads=threads.to_dict(), wall_seconds=wall, images_per_second=len(index) / wall,
                         worker_seconds=sum(r["shard_seconds"] for r in results),
                         worker_cpu_seconds=sum(r["cpu_seconds"] for r in results))
    return runs, facts


def _run_pool(ray, model, tflite_paths, onnx_path, index, threads, batch_size, pool_size, cpus_per_worker,
              ranges, progress) -> list[dict]:
    from ray.util import ActorPool

    actor_class = ray.remote(ShardWorker).options(num_cpus=cpus_per_worker, max_restarts=MAX_RESTARTS,
                                                  max_task_retries=MAX_RESTARTS)
    # Workers do not share our working directory: absolute paths.
    actors = [actor_class.remote([os.path.abspath(p) for p in tflite_paths], os.path.abspath(onnx_path) if onnx_path else None,
                                 threads.to_dict(), batch_size) for _ in range(pool_size)]
    # The model and the index go into the object store once; nested in a dict, Ray passes the
    # references as they are and each actor fetches the objects once.
    shared = {"model": ray.put(model), "index": ray.put(index)}
    try:
        if progress:
            progress(PROGRESS_STAGE, 0, len(ranges))
        return _gather(ray, ActorPool(actors), [(shared, *r) for r in ranges], progress)
    finally:
        for actor in actors:   # give the CPUs back at once: a connected session may run more
            ray.kill(actor)


def run_parity_ray(model, tflite_paths=(), onnx_path=None, source: str | data.ImageIndex = "fashion-mnist",
                   limit: int | None = None, thresholds: parity.Thresholds | None = None, address: str = "auto",
                   progress=None, batch_size: int = 64, num_threads: int | None = None, workers: int | None = None,
                   shard_batches: int | None = None) -> parity.ParityResult:
    """`parity.run_parity` on a Ray cluster: the same ParityResult (bit for bit, timings aside),
    with `cluster` set to the run's ClusterFacts.

    source: a data source as `data.index_images` takes it (with `limit`), or an ImageIndex;
        the files it names must be readable at the same paths on every node.
    address: "local" (start a Ray instance on this machine), "auto" (the running cluster,
        RAY_ADDRESS), or a cluster address. An existing connection (ray.init) is used as it is.
    workers: actors in the pool (default: the cluster's CPUs / one worker's threads).
    shard_batches: batches per shard (default: about SHARDS_PER_WORKER shards per worker).
    """
    index = source if isinstance(source, data.ImageIndex) else data.index_images(source, limit=limit)
    runs, facts = ray_backend_runs(model, tflite_paths, onnx_path, index, address=address, batch_size=batch_size,
                                   num_threads=num_threads, workers=workers, shard_batches=shard_batches,
                                   progress=progress)
    result = parity.score(model, runs, index.labels, index.class_names, index.source, thresholds,
                          model.preprocessing.to_dict() if hasattr(model, "preprocessing") else None)
    result.cluster = facts.to_dict()
    return result
