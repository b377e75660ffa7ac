"""int8 accuracy of the peer tools on one checkpoint: each peer's own static int8 flow, the
same weights, calibration draws and test images as benchmarks/accuracy.py (see
_accuracy_data.py), so the rows stand beside mixdeploy's.

Set-up once: `bash benchmarks/setup_peers.sh` (litert-torch, onnx2tf, ExecuTorch venvs).

    python benchmarks/peers_accuracy.py --checkpoint mixdeploy/weights/mixnet_s_fashion_mnist_224.pt
    python benchmarks/peers_accuracy.py --checkpoint CKPT --images 500 --draws 1 --peers onnxruntime-qdq

Per peer and calibration draw: top-1, drop vs PyTorch fp32 (points), top-1 agreement and mean
logit cosine with PyTorch, conversion wall time and file size; then the spread over draws.
A peer that fails is a row ("failed: reason"). Results are merged, one entry per checkpoint,
into benchmarks/results/peers_accuracy.json and rendered to peers_accuracy.md beside it; the
rows of peers not named by --peers are kept when the weights, --images and --calib-count are
the same, so a slow peer can be measured with fewer draws in a run of its own.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import _accuracy_data as accuracy_data
import peers_lib
from mixdeploy.atomic import write_json_atomic, write_text_atomic
from mixdeploy.errors import MixdeployError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
console = Console(stderr=True)


def measure(peer: str, checkpoint: Path, calibration, evaluation: accuracy_data.EvalSet, out_dir: Path) -> dict:
    """One peer, one calibration draw: convert, run on the evaluation images, compare."""
    shutil.rmtree(out_dir, ignore_errors=True)
    try:
        path = peers_lib.convert_int8(peer, checkpoint, calibration, out_dir)
        logits = peers_lib.run_logits(peer, path, evaluation.images)
    except peers_lib.PeerError as err:
        return {"peer": peer, "error": str(err)}
    facts = peers_lib.read_facts(path)
    metrics = accuracy_data.metrics(evaluation, logits, peer)
    return {"peer": peer, **accuracy_data.row_metrics(metrics), "convert_seconds": facts["seconds"],
            "file_mb": facts["file_bytes"] / 1e6, "version": facts["version"]}


def run(args) -> dict:
    from mixdeploy.models import load_model

    loaded = load_model(str(args.checkpoint))
    console.print(f"[bold]{args.checkpoint.name}[/]: {loaded.name}, {loaded.preprocessing.describe()}")
    with console.status(f"PyTorch fp32 reference on {args.images} test images ..."):
        evaluation = accuracy_data.eval_set(loaded, args.images)
    entry = {"checkpoint": args.checkpoint.name, "model": loaded.name, "weights_sha256": loaded.weights_sha256,
             "preprocessing": loaded.preprocessing.to_dict(), "images": len(evaluation.images),
             "reference_top1": float((evaluation.reference.argmax(1) == evaluation.labels).mean()),
             "calibration": {"count": args.calib_count, "seed_base": accuracy_data.CALIBRATION_SEED_BASE},
             "rows": carried_rows(args.out, args.checkpoint.name, loaded.weights_sha256, len(evaluation.images),
                                  args.calib_count, args.peers)}
    work = args.work / args.checkpoint.stem
    for draw in range(args.draws):
        calibration = accuracy_data.calibration_images(loaded.preprocessing, draw, args.calib_count)
        for peer in args.peers:
            with console.status(f"draw {draw}: {peer} converting ({args.calib_count} calibration images) and running ..."):
                row = {"draw": draw, **measure(peer, args.checkpoint, calibration, evaluation, work / f"draw{draw}" / peer)}
            entry["rows"].append(row)
            console.print(f"  draw {draw} {peer}: " + (f"[red]failed: {row['error']}[/]" if "error" in row else
                          f"top-1 {row['top1']:.2%}, agreement {row['top1_agreement']:.2%}, "
                          f"cosine {row['mean_cosine']:.4f}, {row['convert_seconds']:.0f} s"))
            entry["summary"] = summaries(entry["rows"])
            save(args.out, entry)  # after every row: a long run keeps what it measured
    return entry


def carried_rows(out: Path, checkpoint: str, weights_sha256, images: int, calib_count: int, peers) -> list[dict]:
    """The rows of peers this run does not measure, from an earlier run on the same weights,
    test images and calibration count (so slow peers can run with fewer draws, separately)."""
    if not out.is_file():
        return []
    old = json.loads(out.read_text()).get(checkpoint)
    if not old or (old["weights_sha256"], old["images"], old["calibration"]["count"]) != (weights_sha256, images, calib_count):
        return []
    return [row for row in old["rows"] if row["peer"] not in peers]


def summaries(rows: list[dict]) -> dict:
    peers = dict.fromkeys(row["peer"] for row in rows)
    return {peer: accuracy_data.summarize([r for r in rows if r["peer"] == peer and "error" not in r]) for peer in peers}


def save(out: Path, entry: dict) -> None:
    report = json.loads(out.read_text()) if out.is_file() else {}
    report[entry["checkpoint"]] = entry
    write_json_atomic(out, report)
    write_text_atomic(out.with_suffix(".md"), render_markdown(report))


def _spread(stat: dict | None, fmt) -> str:
    if not stat:
        return "-"
    if stat["min"] == stat["max"]:  # one draw (or no spread): the value alone
        return fmt(stat["mean"])
    return f"{fmt(stat['mean'])} ({fmt(stat['min'])} .. {fmt(stat['max'])})"


def _pct(v: float) -> str:
    return f"{v:.2%}"


def _pts(v: float) -> str:
    return f"{v:+.2f}"


def _cos(v: float) -> str:
    return f"{v:.4f}"


def render_markdown(report: dict) -> str:
    lines = ["# Peer int8 tools on Fashion-MNIST MixNet checkpoints (generated by benchmarks/peers_accuracy.py)", "",
             "Each peer's own static int8 flow on the same weights; calibration draw d = the train images at "
             "sort(default_rng(1000 + d).choice(60000, count)); evaluation = the first N test images; "
             "reference = PyTorch fp32. Cells: mean over draws (min .. max); drop in points (positive = worse); "
             "draws: how many this peer was measured on (draws 0, 1, ...; a slow peer may have fewer); "
             "convert s: mean wall time of one conversion on the machine that ran it.", ""]
    for entry in report.values():
        lines += [f"## {entry['checkpoint']} ({entry['model']}, {entry['images']} test images, "
                  f"{entry['calibration']['count']} calibration images per draw, "
                  f"PyTorch fp32 top-1 {entry['reference_top1']:.2%})", "",
                  "| peer | draws | int8 top-1 | drop (pts) | top-1 agreement | mean cosine | convert s | MB |",
                  "|---|---|---|---|---|---|---|---|"]
        for peer, summary in entry["summary"].items():
            ok = [r for r in entry["rows"] if r["peer"] == peer and "error" not in r]
            failed = [r for r in entry["rows"] if r["peer"] == peer and "error" in r]
            if not ok:
                lines.append(f"| {peers_lib.label(peer)} | 0 | failed: {failed[0]['error']} | | | | | |")
                continue
            seconds = sum(r["convert_seconds"] for r in ok) / len(ok)
            lines.append(f"| {peers_lib.label(peer)} {ok[0]['version'] or ''} | {len(ok)}"
                         f"{f' ({len(failed)} failed)' if failed else ''} | {_spread(summary['top1'], _pct)} | "
                         f"{_spread(summary['top1_drop_points'], _pts)} | {_spread(summary['top1_agreement'], _pct)} | "
                         f"{_spread(summary['mean_cosine'], _cos)} | {seconds:.0f} | {ok[0]['file_mb']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def print_table(entry: dict) -> None:
    table = Table(title=f"{entry['checkpoint']}: PyTorch fp32 top-1 {entry['reference_top1']:.2%} on {entry['images']} images")
    for column in ("peer", "draw", "int8 top-1", "drop pts", "agreement", "mean cosine", "convert s", "MB"):
        table.add_column(column)
    for row in entry["rows"]:
        if "error" in row:
            table.add_row(row["peer"], str(row["draw"]), f"failed: {row['error']}", *[""] * 5)
        else:
            table.add_row(row["peer"], str(row["draw"]), _pct(row["top1"]), _pts(row["top1_drop_points"]),
                          _pct(row["top1_agreement"]), _cos(row["mean_cosine"]), f"{row['convert_seconds']:.0f}",
                          f"{row['file_mb']:.2f}")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a mixdeploy checkpoint (names its model and preprocessing)")
    parser.add_argument("--images", type=int, default=2000, help="first N Fashion-MNIST test images")
    parser.add_argument("--draws", type=int, default=3, help="calibration draws (seeds 1000, 1001, ...)")
    parser.add_argument("--calib-count", type=int, default=64,
                        help="calibration images per draw (64: what `mixdeploy export --calib` and benchmarks/accuracy.py use)")
    parser.add_argument("--peers", nargs="+", default=list(peers_lib.PEERS), choices=list(peers_lib.PEERS))
    parser.add_argument("--out", type=Path, default=RESULTS / "peers_accuracy.json")
    parser.add_argument("--work", type=Path, default=RESULTS / "work" / "peers_accuracy", help="converted models go here")
    parser.add_argument("--json", action="store_true", help="print this checkpoint's entry as JSON instead of a table")
    args = parser.parse_args()
    if args.images < 1 or args.draws < 1 or args.calib_count < 1:
        parser.error("--images, --draws and --calib-count must be >= 1")
    try:
        entry = run(args)
    except MixdeployError as err:
        console.print(f"[red]error:[/] {err}")
        sys.exit(2)
    if args.json:
        print(json.dumps(entry, indent=2))
    else:
        print_table(entry)


if __name__ == "__main__":
    main()
