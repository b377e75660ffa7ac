"""Selective float at 224: the few layers int8 hurts most, left in float, with their latency cost.

    python benchmarks/keep_float.py                         # the three 224 checkpoints, 3 draws
    python benchmarks/keep_float.py --checkpoints a.pt --draws 1 --variants stem

The blame report (`mixdeploy parity --keep-float auto`) picks layers per model and verifies the
fix on one calibration draw. This asks the question a default must answer: does a fixed choice
win on every checkpoint and every draw, and what does it cost in milliseconds? Variants (ONNX
node names passed to `convert_onnx(keep_float=...)`, with the model's I/O type):

- stem:         the first conv (3 input channels: its int8 input carries the whole image's
                rounding into every feature) stays float; int8 I/O, so the input is still int8.
                The converter then leaves the first block float too: its depthwise conv and its
                residual ADD read the stem's float output;
- stem-fp-io:   the same with float32 I/O: the image never passes through int8;
- stem-head-fp-io: also the classifier (the logits' range sets the output's one scale).

Each variant is converted with the `default` recipe on accuracy.py's calibration draws and judged
on the same test images against the PyTorch fp32 model; `default` comes from --baseline (the same
draws, measured by accuracy.py). Latency: the draw-0 model of each variant beside `default`, in
one interleaved run (LiteRT, 1 and 2 threads); the goal for a default is within 1.1x.
Writes benchmarks/results/keep_float.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402
import accuracy  # noqa: E402
import equalization  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"

# name -> (ONNX nodes kept float, model I/O type)
VARIANTS: dict[str, tuple[list[str], str]] = {
    "stem": (["conv_stem"], "int8"),
    "stem-fp-io": (["conv_stem"], "float32"),
    "stem-head-fp-io": (["conv_stem", "classifier"], "float32"),
}


def convert_and_judge(model, keep: list[str], io_dtype: str, calibration, evaluation, path: Path) -> dict:
    """One conversion with `default`, its metrics against the fp32 reference."""
    from mixdeploy import runtimes
    from mixdeploy.tflite.convert import convert_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(model, path, precision="int8", calibration=calibration, recipe="default",
                     keep_float=keep, io_dtype=io_dtype)
    logits = runtimes.TfliteRunner(path).run(evaluation.images, batch_size=50)
    return accuracy_data.row_metrics(accuracy_data.metrics(evaluation, logits, "int8"))


def run_checkpoint(checkpoint: Path, args) -> dict:
    from mixdeploy.bench.host import bench_models

    work = args.work / checkpoint.stem
    loaded, rewritten, evaluation = accuracy.prepare(checkpoint, work, args.images)
    p = loaded.preprocessing
    draws = [accuracy_data.calibration_images(p, d, 64) for d in range(args.draws)]
    variants = {}
    for name in args.variants:
        keep, io_dtype = VARIANTS[name]
        runs = []
        for d, images in enumerate(draws):
            runs.append(convert_and_judge(rewritten.model, keep, io_dtype, images, evaluation, work / f"{name}_{d}.tflite"))
            accuracy.log(f"  {checkpoint.name} {name} draw {d}: agreement {runs[-1]['top1_agreement'] * 100:.2f}% "
                         f"drop {runs[-1]['top1_drop_points']:+.2f}")
        variants[name] = {"keep_float": keep, "io_dtype": io_dtype, "runs": runs,
                          "summary": accuracy_data.summarize(runs)}
    convert_and_judge(rewritten.model, [], "int8", draws[0], evaluation, work / "default_0.tflite")
    timed = {"default": work / "default_0.tflite", **{n: work / f"{n}_0.tflite" for n in args.variants}}
    latency = bench_models(timed, threads=(1, 2), runs=args.runs, warmup=5)
    return {"checkpoint": checkpoint.name, "model": loaded.name, "images": args.images, "draws": args.draws,
            "baseline": equalization.baseline_runs(args.baseline, checkpoint, args.images, args.draws),
            "variants": variants, "latency_ms": latency}


def latency_ratio(latency: dict, name: str, threads: str) -> float:
    return latency[name][threads] / latency["default"][threads]


def render(document: dict) -> str:
    lines = ["# Selective float at 224 (benchmarks/keep_float.py)", "",
             "`default` recipe, `auto` lowering, draws of 64 calibration images; agreement with the PyTorch fp32 "
             "model. Per draw: agreement % (change against `default` on the same draw). Latency: draw-0 models in "
             "one interleaved LiteRT run, ratio to `default`.", "",
             "| checkpoint | variant | kept float | I/O | agreement % | per draw | drop (points) | cosine | "
             "latency 1t / 2t vs default |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in document["checkpoints"]:
        base = e["baseline"]
        if base:
            s = accuracy_data.summarize(base)
            lines.append(f"| {e['checkpoint']} | default | - | int8 | {s['top1_agreement']['mean'] * 100:.2f} | "
                         f"{equalization.per_draw(base, None)} | {s['top1_drop_points']['mean']:.2f} | "
                         f"{s['mean_cosine']['mean']:.4f} | 1.00 / 1.00 |")
        for name, v in e["variants"].items():
            s, lat = v["summary"], e["latency_ms"]
            lines.append(f"| {e['checkpoint']} | {name} | {', '.join(v['keep_float'])} | {v['io_dtype']} | "
                         f"{s['top1_agreement']['mean'] * 100:.2f} | {equalization.per_draw(v['runs'], base)} | "
                         f"{s['top1_drop_points']['mean']:.2f} | {s['mean_cosine']['mean']:.4f} | "
                         f"{latency_ratio(lat, name, '1'):.2f} / {latency_ratio(lat, name, '2'):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=equalization.CHECKPOINTS)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--runs", type=int, default=30, help="timed rounds of the interleaved latency run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-keep-float"))
    ap.add_argument("--baseline", type=Path, default=RESULTS / "accuracy_default_6draws.json",
                    help="accuracy.py's results holding the `default` rows of the same draws")
    ap.add_argument("--out", type=Path, default=RESULTS / "keep_float")
    args = ap.parse_args(argv)
    document = {"checkpoints": [run_checkpoint(c, args) for c in args.checkpoints]}
    accuracy_data.write_results(args.out, document, render)


if __name__ == "__main__":
    main()
