"""Issue 14's must-show table: MixNet-S, -M and -L at 224x224, int8 latency against the machine's
roofline, thread scaling, the peers and onnxruntime fp32, and the op-count change, in ONE run.

    nice -n 5 python benchmarks/latency_224.py                 # S, M and L (peers cached after the first run)
    python benchmarks/latency_224.py --models s --skip onnx2tf  # quicker look
    python benchmarks/latency_224.py --render                  # the .md again from the .json, no timing

Per model, one checkpoint that every tool converts:
  S  the bundled mixdeploy/weights/mixnet_s_fashion_mnist_224.pt (trained, 10 classes);
  M, L  no trained 224 weights exist: the model's own initialisation under torch.manual_seed(0),
        10 classes, the S checkpoint's preprocessing, saved once under the work folder. Latency
        does not depend on the weights' values; int8 is still calibrated on Fashion-MNIST images.
What is measured, in this order:
  1. conversions: `mixdeploy export CKPT --input-size 224 --int8 --calib fashion-mnist` (default
     recipe and `auto` lowering; always redone: it is the thing under test), and each peer's int8
     (benchmarks/peers_lib, same first --calib-count train images). Peer conversions are cached
     under --work (onnx2tf takes minutes per model here): a rerun only re-times; a peer that
     fails is cached as its failure and shown as a row. Delete --work to convert again.
  2. op-count change: mixdeploy's converter on the exported ONNX with none of the rewrite passes
     (model.onnx, the "export" column of docs/rewrites.md), int8, beside the shipped int8 model.
  3. roofline: `mixdeploy profile`'s profile_host on the shipped int8 model at 1 thread: every
     op alone and each op class's ceiling timed interleaved with the whole model; whole/roofline
     is its whole-model time (fastest round) over the sum of MACs / class ceiling.
  4. latency: every model of every tool (mixdeploy int8 and fp32 in LiteRT/XNNPACK, peers in
     their runtimes, onnxruntime fp32 on the plain ONNX) at 1 and 2 threads, all interleaved in
     one run_interleaved, median of --runs rounds. Ratios are mixdeploy int8 / the other model.
Writes --out/latency_224.json and latency_224.md (with nproc, CPU and load average at start and end).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

import peers
import peers_lib

ROOT = Path(__file__).resolve().parents[1]
SIZE = 224
S_CHECKPOINT = ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt"
MODELS = {"s": "mixnet-s", "m": "mixnet-m", "l": "mixnet-l"}
INIT_SEED = 0
THREADS = (1, 2)
SLOWEST_OPS = 3  # per model, in the profile table
PEERS = tuple(peers_lib.PEERS)
OURS, OURS_FP32, ORT_FP32 = "mixdeploy int8", "mixdeploy fp32", "onnxruntime fp32"
GOALS = {"whole_over_roofline": 1.5, "speedup_1_to_2": 1.8, "best_peer_ratio": 0.5, "ort_fp32_ratio": 1.0}

console = Console(stderr=True)


# --- the weights each model is converted from ---------------------------------------------------

def checkpoint_for(key: str, work: Path) -> tuple[Path, str]:
    """(checkpoint file, what its weights are) for model `key`."""
    if key == "s":
        return S_CHECKPOINT, "trained (bundled mixnet_s_fashion_mnist_224.pt)"
    path = work / MODELS[key] / f"{MODELS[key]}_seed{INIT_SEED}_224.pt"
    if not path.is_file():
        write_seeded_checkpoint(MODELS[key], path)
    return path, f"untrained: seeded init (torch.manual_seed({INIT_SEED})), 10 classes"


def write_seeded_checkpoint(name: str, path: Path) -> None:
    """A mixdeploy checkpoint of `name`'s own initialisation under INIT_SEED, carrying the S 224
    checkpoint's preprocessing, so every tool loads the same weights and preprocessing by one path."""
    import torch

    from mixdeploy.models import create_model, load_model
    from mixdeploy.models.sources import read_checkpoint, save_checkpoint

    torch.manual_seed(INIT_SEED)
    module = create_model(name, num_classes=10).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, module, model=name, num_classes=10, preprocessing=load_model(S_CHECKPOINT).preprocessing,
                    extra={"class_names": read_checkpoint(S_CHECKPOINT).metadata.get("class_names"),
                           "init": f"create_model({name!r}, num_classes=10) under torch.manual_seed({INIT_SEED}); "
                                   "not trained"})


# --- conversions ----------------------------------------------------------------------------------

def convert_ours(checkpoint: Path, calib_count: int, out: Path) -> dict:
    console.log(f"mixdeploy export {checkpoint.name} --input-size {SIZE} --int8 --calib fashion-mnist ...")
    return peers.convert_with_mixdeploy(SimpleNamespace(checkpoint=checkpoint, calib_count=calib_count), SIZE, out)


def convert_peer_cached(peer: str, checkpoint: Path, calibration, calib_count: int, out: Path) -> dict:
    """{"int8": path, "seconds": s} or {"error": reason}; reused from out/<peer>.cache.json when
    it was made from the same checkpoint bytes and calibration count."""
    from mixdeploy.manifest import sha256_file

    record = out / f"{peer}.cache.json"
    key = {"checkpoint_sha256": sha256_file(checkpoint), "calib_count": calib_count, "input_size": SIZE}
    if record.is_file():
        cached = json.loads(record.read_text())
        if cached["key"] == key and ("error" in cached["result"] or Path(cached["result"]["int8"]).is_file()):
            console.log(f"{peer}: cached conversion ({record})")
            return cached["result"]
    console.log(f"{peer}: converting {checkpoint.name} at {SIZE} px ...")
    try:
        int8 = peers_lib.convert_int8(peer, checkpoint, calibration, out / peer, input_size=SIZE)
        result = {"int8": str(int8), "seconds": peers_lib.read_facts(int8)["seconds"]}
    except peers_lib.PeerError as err:  # a peer failing is a row of the table
        console.log(f"[yellow]{peer} failed:[/] {err}")
        result = {"error": str(err)[:500]}
    from mixdeploy.atomic import write_json_atomic

    write_json_atomic(record, {"key": key, "result": result})
    return result


def plain_int8_histogram(exported_onnx: Path, calibration, out: Path) -> dict[str, int]:
    """Op histogram of mixdeploy's converter on the exported ONNX without any rewrite pass, int8."""
    import onnx

    from mixdeploy.tflite.convert import convert_onnx
    from mixdeploy.tflite.inspect import inspect_tflite

    console.log("int8 conversion of the plain export (no rewrites), for the op-count change ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(onnx.load(str(exported_onnx)), out, precision="int8", calibration=calibration)
    return inspect_tflite(out).op_histogram


def profile_roofline(int8: Path, runs: int) -> dict:
    from mixdeploy.bench.profile import profile_host

    console.log(f"profile {int8.parent.name}: every op alone + class ceilings, 1 thread, {runs} rounds ...")
    result = profile_host(int8, threads=1, runs=runs)
    slowest = sorted(result.ops, key=lambda op: -op.ms)[:SLOWEST_OPS]
    return {"whole_ms": result.whole_ms, "roofline_ms": result.roofline_ms, "sum_ops_ms": result.sum_ops_ms,
            "data_floor_ms": result.data_floor_ms, "floor_ms": result.floor_ms, "bandwidth_gbs": result.bandwidth_gbs,
            "bandwidth_op": result.bandwidth_op, "invoke_overhead_ms": result.invoke_overhead_ms, "notes": result.notes,
            "slowest_ops": [{"index": op.index, "op": op.op_name, "class": op.op_class, "name": op.name, "ms": op.ms,
                             "xnnpack": op.delegated} for op in slowest],
            "classes": [{"class": c.op_class, "ops": c.ops, "ms": c.ms, "macs": c.macs, "gmacs": c.gmacs,
                         "ceiling_gmacs": c.ceiling_gmacs, "roofline_ms": c.roofline_ms,
                         "data_floor_ms": c.data_floor_ms} for c in result.classes]}


# --- the table (pure: tested on made-up timings) ------------------------------------------------

def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarise_model(latency: dict[str, dict[str, float]], profile: dict, peer_errors: dict[str, str]) -> dict:
    """One model's row from its medians ({label: {"1": ms, "2": ms}}), its profile (whole_ms,
    roofline_ms) and the peers that failed ({peer: reason}). Ratios are mixdeploy int8 / other."""
    ours = latency.get(OURS, {})
    ours1, ours2 = ours.get("1"), ours.get("2")
    peer_rows = {}
    for peer in PEERS:
        if peer in peer_errors:
            peer_rows[peer] = {"error": peer_errors[peer]}
        elif f"{peer} int8" in latency:
            ms = latency[f"{peer} int8"]
            peer_rows[peer] = {"1": ms.get("1"), "2": ms.get("2"), "ratio_1": ratio(ours1, ms.get("1")),
                               "ratio_2": ratio(ours2, ms.get("2"))}
    timed = {p: r for p, r in peer_rows.items() if r.get("1")}
    best = min(timed, key=lambda p: timed[p]["1"]) if timed else None
    ort1 = latency.get(ORT_FP32, {}).get("1")
    row = {"int8_1": ours1, "int8_2": ours2, "speedup_1_to_2": ratio(ours1, ours2),
           "fp32_1": latency.get(OURS_FP32, {}).get("1"), "fp32_2": latency.get(OURS_FP32, {}).get("2"),
           "roofline_ms": profile.get("roofline_ms"), "profile_whole_ms": profile.get("whole_ms"),
           "whole_over_roofline": ratio(profile.get("whole_ms"), profile.get("roofline_ms")),
           "data_floor_ms": profile.get("data_floor_ms"),
           "whole_over_floor": ratio(profile.get("whole_ms"), profile.get("floor_ms")),
           "peers": peer_rows, "best_peer": best, "best_peer_ratio": timed[best]["ratio_1"] if best else None,
           "ort_fp32_1": ort1, "ort_fp32_ratio": ratio(ours1, ort1)}
    row["goals_met"] = goals_met(row)
    return row


def goals_met(row: dict) -> dict[str, bool | None]:
    """Issue 14's goals: whole/roofline <= 1.5, 1->2 threads >= 1.8x, <= 0.5x the best peer, faster than ORT fp32."""
    def check(name, ok):
        return None if row[name] is None else ok(row[name])
    return {"whole_over_roofline": check("whole_over_roofline", lambda v: v <= GOALS["whole_over_roofline"]),
            "speedup_1_to_2": check("speedup_1_to_2", lambda v: v >= GOALS["speedup_1_to_2"]),
            "best_peer_ratio": check("best_peer_ratio", lambda v: v <= GOALS["best_peer_ratio"]),
            "ort_fp32_ratio": check("ort_fp32_ratio", lambda v: v < GOALS["ort_fp32_ratio"])}


def op_count_change(plain: dict[str, int], ours: dict[str, int]) -> dict[str, list[int]]:
    """{op: [plain, ours, ours - plain]} for every op type in either graph, plus "total"."""
    change = {op: [plain.get(op, 0), ours.get(op, 0), ours.get(op, 0) - plain.get(op, 0)]
              for op in sorted(set(plain) | set(ours))}
    total = [sum(plain.values()), sum(ours.values())]
    change["total"] = total + [total[1] - total[0]]
    return change


# --- the run --------------------------------------------------------------------------------------

def host_state() -> dict:
    from mixdeploy.bench.host import host_info

    load = os.getloadavg()
    return {**host_info(), "cpu_flags": cpu_flags(), "nproc": len(os.sched_getaffinity(0)), "niceness": os.nice(0),
            "loadavg_1_5_15": [round(v, 2) for v in load], "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def cpu_flags() -> list[str]:
    """The SIMD features that set the int8 ceilings (the limit moves with them)."""
    try:
        flags = next((ln.split(":", 1)[1].split() for ln in open("/proc/cpuinfo") if ln.startswith("flags")), [])
    except OSError:
        return []
    return [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni") if f in flags]


def prepare_model(key: str, args) -> dict:
    """Convert model `key` with every tool; -> its files, facts and op-count change."""
    from mixdeploy import data
    from mixdeploy.models import load_model
    from mixdeploy.tflite.inspect import inspect_tflite

    name = MODELS[key]
    out = args.work / name
    checkpoint, weights = checkpoint_for(key, args.work)
    preprocessing = load_model(str(checkpoint)).preprocessing.with_size(SIZE)
    # the images `mixdeploy export --calib fashion-mnist` calibrates on (the plain graph always needs them)
    calibration = data.load_images("fashion-mnist", preprocessing, limit=args.calib_count, split="train").images

    ours = convert_ours(checkpoint, args.calib_count, out / "mixdeploy")
    peer_results = {peer: convert_peer_cached(peer, checkpoint, calibration, args.calib_count, out)
                    for peer in PEERS if peer not in args.skip}
    ours_hist = inspect_tflite(ours["int8"]).op_histogram
    plain_hist = plain_int8_histogram(ours["onnx"], calibration, out / "plain_int8.tflite")
    files = {OURS: ("mixdeploy", Path(ours["int8"])), OURS_FP32: ("mixdeploy", Path(ours["fp32"])),
             ORT_FP32: ("mixdeploy", Path(ours["onnx"]))}
    files.update({f"{peer} int8": (peer, Path(r["int8"])) for peer, r in peer_results.items() if "int8" in r})
    return {"name": name, "weights": weights, "checkpoint": str(checkpoint.relative_to(ROOT) if checkpoint.is_relative_to(ROOT) else checkpoint),
            "export_seconds": round(ours["seconds"], 1), "files": files,
            "peer_convert_seconds": {p: r.get("seconds") for p, r in peer_results.items()},
            "peer_errors": {p: r["error"] for p, r in peer_results.items() if "error" in r},
            "op_count_change": op_count_change(plain_hist, ours_hist)}


def time_all(prepared: dict[str, dict], runs: int) -> tuple[dict, dict]:
    """Every model of every tool at 1 and 2 threads in one interleaved run -> ({model: {label: {threads:
    median ms}}}, the same with the fastest round: under load the median carries other jobs' share)."""
    from mixdeploy.bench import host

    configs, keys, sessions = [], [], []
    for key, model in prepared.items():
        model_configs, labels = peers.latency_configs(model["files"], THREADS, sessions)
        configs += model_configs
        keys += [(key, label) for label in labels]
    console.log(f"timing {len(configs)} configurations (models x tools x threads), interleaved, {runs} rounds ...")
    done = {"rounds": 0}
    def on_round():
        done["rounds"] += 1
        if done["rounds"] % 10 == 0 or done["rounds"] == runs:
            console.log(f"  round {done['rounds']}/{runs}")
    try:
        results = host.run_interleaved(configs, runs, warmup=5, on_round=on_round)
    finally:
        for session in sessions:
            session.close()
    medians: dict[str, dict[str, dict[str, float]]] = {}
    fastest: dict[str, dict[str, dict[str, float]]] = {}
    for (key, label), result in zip(keys, results):
        medians.setdefault(key, {}).setdefault(label, {})[str(result.threads)] = result.median_ms
        fastest.setdefault(key, {}).setdefault(label, {})[str(result.threads)] = result.min_ms
    return medians, fastest


def run(args) -> dict:
    start_state, started = host_state(), time.perf_counter()
    console.log(f"host: {start_state['cpu']}, nproc {start_state['nproc']}, load {start_state['loadavg_1_5_15']}, "
                f"niceness {start_state['niceness']}")
    prepared = {key: prepare_model(key, args) for key in args.models}
    profiles = {key: profile_roofline(model["files"][OURS][1], args.profile_runs) for key, model in prepared.items()}
    latency, fastest = time_all(prepared, args.runs)
    models = {}
    for key, model in prepared.items():
        models[MODELS[key]] = {
            "weights": model["weights"], "checkpoint": model["checkpoint"], "export_seconds": model["export_seconds"],
            "peer_convert_seconds": model["peer_convert_seconds"], "latency_ms": latency[key],
            "fastest_round_ms": fastest[key],
            "profile": profiles[key], "op_count_change": model["op_count_change"],
            "summary": summarise_model(latency[key], profiles[key], model["peer_errors"])}
    return {"input_size": SIZE, "runs": args.runs, "profile_runs": args.profile_runs, "calib_count": args.calib_count,
            "skipped_peers": list(args.skip), "peer_versions": peer_versions(), "host_start": start_state,
            "host_end": host_state(), "wall_seconds": round(time.perf_counter() - started, 1), "models": models}


def peer_versions() -> dict:
    from peers_lib.common import package_version

    return {"onnx2tf": package_version(".venv-onnx2tf", "onnx2tf"),
            "litert-torch": package_version(".venv-litert-torch", "litert-torch"),
            "executorch": package_version(".venv-executorch", "executorch"),
            "onnxruntime-qdq": package_version(None, "onnxruntime")}


# --- Markdown ------------------------------------------------------------------------------------

def _ms(v) -> str:
    return f"{v:.2f}" if v else "-"


def _x(v, goal: bool | None = None) -> str:
    if v is None:
        return "-"
    mark = "" if goal is None else (" ✓" if goal else " ✗")
    return f"{v:.2f}x{mark}"


def render_markdown(report: dict) -> str:
    start, end = report["host_start"], report["host_end"]
    lines = [f"# int8 latency of MixNet-S/M/L at {report['input_size']}x{report['input_size']} (generated by "
             "benchmarks/latency_224.py)", "",
             f"One run ({report['wall_seconds'] / 60:.0f} min): host CPU {start['cpu']} "
             f"({', '.join(start.get('cpu_flags', [])) or 'flags not read'}), nproc {start['nproc']}, "
             f"niceness {start['niceness']}, LiteRT {start['ai_edge_litert']}; load average (1/5/15 min) "
             f"{'/'.join(map(str, start['loadavg_1_5_15']))} at start, {'/'.join(map(str, end['loadavg_1_5_15']))} "
             f"at end. Latency: median of {report['runs']} rounds, every model of every tool at 1 and 2 threads "
             "interleaved in the same rounds, batch 1. Ratios are mixdeploy int8 / the other model (< 1: ours "
             "faster).", "",
             "The machine is shared with other jobs (2 cores): a 2-thread run competes with them for the "
             "second core, so thread scaling under load is not a clean measurement; 1-thread ratios are the "
             "reliable ones.", "",
             "Conversion seconds: mixdeploy's whole export is timed in this run; a peer's is the time recorded "
             "when it converted (conversions are cached under --work, so a rerun only re-times).", "",
             "## Against issue 14's goals", "",
             "| model | weights | int8 1t ms | int8 2t ms | 1->2 speed-up (goal >= 1.8x) | roofline ms | "
             "whole / roofline, 1t (goal <= 1.5x) | data floor ms | whole / (roofline + data floor) | "
             "best peer int8 1t | ours / best peer (goal <= 0.5x) | "
             "ORT fp32 1t ms | ours / ORT fp32 (goal < 1) | ops plain -> ours |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, model in report["models"].items():
        s, g = model["summary"], model["summary"]["goals_met"]
        best = f"{s['best_peer']} {_ms(s['peers'][s['best_peer']]['1'])}" if s["best_peer"] else "-"
        total = model["op_count_change"]["total"]
        lines.append(f"| {name} | {model['weights']} | {_ms(s['int8_1'])} | {_ms(s['int8_2'])} | "
                     f"{_x(s['speedup_1_to_2'], g['speedup_1_to_2'])} (fastest rounds {_x(_fastest_speedup(model))}) | "
                     f"{_ms(s['roofline_ms'])} | "
                     f"{_x(s['whole_over_roofline'], g['whole_over_roofline'])} | {_ms(s.get('data_floor_ms'))} | "
                     f"{_x(s.get('whole_over_floor'))} | {best} | "
                     f"{_x(s['best_peer_ratio'], g['best_peer_ratio'])} | {_ms(s['ort_fp32_1'])} | "
                     f"{_x(s['ort_fp32_ratio'], g['ort_fp32_ratio'])} | {total[0]} -> {total[1]} |")
    lines += ["", "Roofline: `mixdeploy profile`'s, measured in this run on the shipped int8 model at 1 thread "
              "(sum over ops of MACs / the best GMAC/s a single op of that class reached here); whole/roofline "
              "uses the profile's own whole-model time (fastest round, minus one invoke's cost), timed "
              "interleaved with the single ops. Data floor: the ops without MACs (swish, SE gates, residual adds, "
              "pads, slices, concats) only move data; each one's activation bytes over the best GB/s such an op "
              "reached alone in this run. Roofline + data floor is the model with every op as fast as the best op "
              "of its kind here; the goal is stated against the roofline alone.", "",
              "## Every model (ms, median; ratio = mixdeploy int8 / model at the same thread count)", "",
              "| model | tool | runtime | convert s | 1 thread ms | 2 threads ms | ratio 1t | ratio 2t | fastest round 1t / 2t ms |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, model in report["models"].items():
        s, lat, fast = model["summary"], model["latency_ms"], model["fastest_round_ms"]
        for label in (OURS, OURS_FP32, ORT_FP32):
            one, two = lat.get(label, {}).get("1"), lat.get(label, {}).get("2")
            secs = f"{model['export_seconds']:.0f} (whole export)" if label == OURS else ""
            lines.append(f"| {name} | {label} | {peers.runtime_of(label)} | {secs} | {_ms(one)} | {_ms(two)} | "
                         f"{_x(ratio(s['int8_1'], one))} | {_x(ratio(s['int8_2'], two))} | {_fastest(fast, label)} |")
        for peer, row in s["peers"].items():
            version = report["peer_versions"].get(peer) or ""
            if "error" in row:
                lines.append(f"| {name} | {peer} {version} int8 | {peers.runtime_of(peer)} | failed: {_cell(row['error'])} | | | | | |")
                continue
            secs = model["peer_convert_seconds"].get(peer)
            lines.append(f"| {name} | {peer} {version} int8 | {peers.runtime_of(peer)} | {secs:.0f} | {_ms(row['1'])} | "
                         f"{_ms(row['2'])} | {_x(row['ratio_1'])} | {_x(row['ratio_2'])} | {_fastest(fast, f'{peer} int8')} |")
    lines += ["", "## Where the 1-thread int8 time goes (profile classes, single ops timed alone)", "",
              "| model | class | ops | ms | GMAC/s | ceiling GMAC/s | roofline ms | data floor ms |",
              "|---|---|---|---|---|---|---|---|"]
    for name, model in report["models"].items():
        for c in model["profile"]["classes"]:
            lines.append(f"| {name} | {c['class']} | {c['ops']} | {c['ms']:.2f} | {_num(c['gmacs'])} | "
                         f"{_num(c['ceiling_gmacs'])} | {_ms(c['roofline_ms'])} | {_ms(c.get('data_floor_ms'))} |")
    lines += ["", "Slowest single ops (int8, 1 thread, alone) and what the profile noted:", ""]
    for name, model in report["models"].items():
        slow = "; ".join(f"#{op['index']} {op['op']} {op['ms']:.2f} ms ({op['name']}"
                         f"{', LiteRT builtin kernel' if op['xnnpack'] is False else ''})"
                         for op in model["profile"].get("slowest_ops", []))
        notes = " ".join(model["profile"].get("notes", []))
        lines.append(f"- **{name}**: {slow}." + (f" {notes}" if notes else ""))
    lines += ["", "## Op-count change per op type: int8 TFLite without our rewrites -> mixdeploy int8", "",
              "Baseline: mixdeploy's converter on the exported ONNX (`model.onnx`) with no rewrite pass (the "
              "`export` column of docs/rewrites.md), int8, same calibration.", ""]
    names = list(report["models"])
    ops = sorted({op for m in report["models"].values() for op in m["op_count_change"] if op != "total"}) + ["total"]
    lines += ["| op | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for op in ops:
        cells = []
        for name in names:
            a, b, d = report["models"][name]["op_count_change"].get(op, [0, 0, 0])
            cells.append(f"{a} -> {b} ({d:+d})" if d else f"{a}")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fastest_speedup(model: dict) -> float | None:
    fast = model.get("fastest_round_ms", {}).get(OURS, {})
    return ratio(fast.get("1"), fast.get("2"))


def _fastest(fast: dict, label: str) -> str:
    return f"{_ms(fast.get(label, {}).get('1'))} / {_ms(fast.get(label, {}).get('2'))}"


def _num(v) -> str:
    return f"{v:.1f}" if v else "-"


def _cell(text: str) -> str:
    return text.splitlines()[0][:200].replace("|", "/")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--skip", nargs="*", default=[], choices=PEERS, help="peers to leave out")
    parser.add_argument("--runs", type=int, default=50, help="interleaved latency rounds")
    parser.add_argument("--profile-runs", type=int, default=20, help="rounds of the single-op profile")
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "work" / "latency_224",
                        help="conversions (peers cached here)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args(argv)
    from mixdeploy.atomic import write_json_atomic, write_text_atomic

    json_path, md_path = args.out / "latency_224.json", args.out / "latency_224.md"
    if args.render and not json_path.is_file():
        parser.error(f"--render needs {json_path} from an earlier run: run without --render first")
    report = json.loads(json_path.read_text()) if args.render else run(args)
    if not args.render:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(json_path, report)
    markdown = render_markdown(report)
    write_text_atomic(md_path, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
