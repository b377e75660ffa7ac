"""Why 2 threads are not 2x: `mixdeploy profile` at 1 and at 2 threads, per op class.

    python benchmarks/thread_scaling.py out/mixnet-s/model_int8.tflite [more .tflite ...]

For each model: profile_host at 1 thread and at 2 threads (every op alone and the whole model,
fastest of --runs rounds each, so a busy second core shows less than in medians), then per op
class the 1-thread ms, the 2-thread ms and their ratio, and the share of the 1-thread time. What
a class with a low ratio costs the whole model is Amdahl's law: the whole-model speed-up if every
class scaled like the best one is printed beside the measured one. Writes --out (markdown).

The machine's own share of the blame: two 1-thread copies of the whole model, each in its own
process, invoked at once (started at a barrier, rounds interleaved with one copy alone and one
2-thread copy). Their combined throughput is what this machine gives the model's work on two
cores when nothing is split or synchronised; if it is well under 2x, the cores share something
(cache, memory bandwidth, a physical core) and no threading of one inference gets 2x either.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def scaling_rows(one, two) -> list[dict]:
    """Per class: ms at 1 and 2 threads, their ratio and the share of the 1-thread op time."""
    total = sum(c.ms for c in one.classes) or 1.0
    two_ms = {c.op_class: c.ms for c in two.classes}
    rows = []
    for c in one.classes:
        t2 = two_ms.get(c.op_class)
        rows.append({"class": c.op_class, "ops": c.ops, "ms_1": c.ms, "ms_2": t2,
                     "speedup": c.ms / t2 if t2 else None, "share": c.ms / total})
    return rows


def if_all_scaled_like_best(rows: list[dict]) -> float | None:
    """Whole-op-time speed-up if every class sped up like the best-scaling class."""
    best = max((r["speedup"] for r in rows if r["speedup"]), default=None)
    if not best:
        return None
    one = sum(r["ms_1"] for r in rows)
    return one / sum(r["ms_1"] / best for r in rows)


@dataclass(frozen=True)
class Copies:
    """ms per invoke, fastest round of each: one 1-thread copy alone, the slowest of `copies`
    1-thread copies invoked at once, one `copies`-thread copy; `overlapped`: every round of the
    copies ran at the same time (their invoke loops' spans intersect)."""

    copies: int
    alone_ms: float
    together_ms: float
    threaded_ms: float
    overlapped: bool

    @property
    def throughput(self) -> float:
        """Combined throughput of the copies at once, in units of one copy alone."""
        return self.copies * self.alone_ms / self.together_ms

    @property
    def threaded_speedup(self) -> float:
        return self.alone_ms / self.threaded_ms


def _copy_worker(path: str, threads: int, conn, barrier) -> None:
    """One interpreter, kept across rounds: per request of n invokes, wait at the barrier, run
    them, send back (start, end) on the shared monotonic clock."""
    from mixdeploy.bench.host import litert_runner, random_inputs, tflite_input_details

    run, _ = litert_runner(path, threads, True, random_inputs(tflite_input_details(path))[1])()
    run()
    while (invokes := conn.recv()) is not None:
        barrier.wait(timeout=60)  # a peer that died breaks it: this worker exits, the parent reads EOF
        start = time.perf_counter()
        for _ in range(invokes):
            run()
        conn.send((start, time.perf_counter()))


class _Group:
    """Worker processes (one per thread count in `threads`) invoked together."""

    def __init__(self, ctx, path: str, threads: list[int]):
        self.barrier = ctx.Barrier(len(threads))  # kept here: the workers need it alive
        self.workers = []
        for count in threads:
            mine, theirs = ctx.Pipe()
            process = ctx.Process(target=_copy_worker, args=(path, count, theirs, self.barrier), daemon=True)
            process.start()
            theirs.close()  # a worker that dies then reads as EOF here, not as a hang
            self.workers.append((process, mine))

    def spans(self, invokes: int) -> list[tuple[float, float]]:
        for _, conn in self.workers:
            conn.send(invokes)
        return [conn.recv() for _, conn in self.workers]

    def close(self) -> None:
        for process, conn in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()


def parallel_copies(path: str | os.PathLike, copies: int = 2, rounds: int = 10,
                    seconds_per_round: float = 0.3) -> Copies:
    """Time one 1-thread copy, `copies` 1-thread copies at once and one `copies`-thread copy of
    `path`, rounds interleaved (spawned processes: the workers share no interpreter state)."""
    ctx = multiprocessing.get_context("spawn")
    groups = {}
    try:
        for name, threads in (("alone", [1]), ("together", [1] * copies), ("threaded", [copies])):
            groups[name] = _Group(ctx, str(path), threads)
        start, end = groups["alone"].spans(3)[0]
        invokes = max(1, round(seconds_per_round / ((end - start) / 3)))
        best = {name: float("inf") for name in groups}
        overlapped = True
        for _ in range(rounds):
            for name, group in groups.items():
                spans = group.spans(invokes)
                best[name] = min(best[name], max(e - s for s, e in spans) / invokes * 1e3)
                if name == "together":
                    overlapped &= max(s for s, _ in spans) < min(e for _, e in spans)
        return Copies(copies, best["alone"], best["together"], best["threaded"], overlapped)
    finally:
        for group in groups.values():
            group.close()


def copies_line(copies: Copies) -> str:
    return (f"the machine: {copies.copies} one-thread copies at once ran {copies.together_ms:.3f} ms each against "
            f"{copies.alone_ms:.3f} ms alone, **x{copies.throughput:.2f}** the throughput of one; one copy at "
            f"{copies.copies} threads {copies.threaded_ms:.3f} ms, x{copies.threaded_speedup:.2f} "
            f"({copies.threaded_speedup / copies.throughput * 100:.0f}% of what the copies got)"
            + ("" if copies.overlapped else " (warning: the copies did not always overlap)"))


def markdown(path: str, one, two, rows: list[dict], copies: Copies | None = None) -> str:
    sum_1 = sum(c.ms for c in one.classes)
    sum_2 = sum(c.ms for c in two.classes)
    lines = [f"### {Path(path).parent.name}/{Path(path).name}", "",
             f"whole model: {one.whole_ms:.3f} ms at 1 thread, {two.whole_ms:.3f} ms at 2 threads: "
             f"**{one.whole_ms / two.whole_ms:.2f}x**; sum of ops alone {sum_1:.3f} -> {sum_2:.3f} ms "
             f"({sum_1 / sum_2:.2f}x)", "",
             "| class | ops | 1 thread ms | 2 threads ms | speed-up | share of 1-thread op time |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "-"
        two_ms = f"{r['ms_2']:.3f}" if r["ms_2"] is not None else "-"
        lines.append(f"| {r['class']} | {r['ops']} | {r['ms_1']:.3f} | {two_ms} | {speed} | {r['share'] * 100:.0f}% |")
    ideal = if_all_scaled_like_best(rows)
    if ideal:
        lines += ["", f"if every class scaled like the best one: {ideal:.2f}x on the sum of ops"]
    if copies:
        lines += ["", copies_line(copies)]
    return "\n".join(lines)


def main(argv=None):
    from mixdeploy.bench.profile import profile_host

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--copy-rounds", type=int, default=10, help="rounds of the two-copies run (0: skip it)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "thread_scaling.md")
    args = ap.parse_args(argv)
    parts = [f"# Thread scaling per op class (generated by benchmarks/thread_scaling.py)", "",
             f"nproc {os.cpu_count()}, load average at start {os.getloadavg()[0]:.2f}; fastest of {args.runs} rounds "
             "per op, each thread count its own run.", ""]
    for path in args.models:
        print(f"profiling {path} at 1 and 2 threads ...", file=sys.stderr, flush=True)
        one = profile_host(path, threads=1, runs=args.runs)
        two = profile_host(path, threads=2, runs=args.runs)
        copies = parallel_copies(path, rounds=args.copy_rounds) if args.copy_rounds else None
        text = markdown(str(path), one, two, scaling_rows(one, two), copies)
        print(text + "\n", flush=True)
        parts += [text, ""]
    parts.append(f"load average at end {os.getloadavg()[0]:.2f}")
    args.out.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
