"""One rewrite pass, measured: the default passes with it vs without it, in one interleaved run.

    python benchmarks/pass_ab.py --pass relu_into_branches --models mixnet-m mixnet-l
    python benchmarks/pass_ab.py --pass piece_pads --models mixnet-s --lowering decompose

Per model at --size (mixdeploy's own definitions, seeded random init under torch.manual_seed(0):
latency does not depend on the weights' values): export once, rewrite with the default passes
with and without --pass (--lowering for lower_mixconv), convert each to fp32 and to int8
(calibrated on the same --calib Fashion-MNIST train images), then time all of them in ONE
interleaved LiteRT/XNNPACK run at 1 and 2 threads (median of --runs rounds). Prints, per model and
precision, the TFLite op-count change and latency without/with (a ratio > 1: the pass is faster),
and the largest |difference| of the two fp32 models' outputs (the pass keeps the function).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def variants(model_name: str, args, work: Path) -> dict[str, Path]:
    """{'<precision> without'|'<precision> with': .tflite path} for one model."""
    import onnx
    import torch

    from mixdeploy import data
    from mixdeploy.models import create_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import DEFAULT_PASSES, rewrite
    from mixdeploy.preprocess import Preprocessing
    from mixdeploy.tflite.convert import convert_onnx

    torch.manual_seed(0)
    module = create_model(model_name, num_classes=10).eval()
    exported = export_onnx(module, args.size, work / f"{model_name}.onnx")
    pre = Preprocessing(input_size=args.size, interpolation="bilinear", crop_pct=1.0)
    calibration = data.load_images("fashion-mnist", pre, limit=args.calib, split="train").images
    without = [name for name in DEFAULT_PASSES if name != args.pass_name]
    paths = {}
    for label, passes in (("without", without), ("with", list(DEFAULT_PASSES))):
        rewritten = rewrite(onnx.load(str(exported.path)), lowering=args.lowering, runtime="int8", passes=passes).model
        for precision in ("fp32", "int8"):
            path = paths[f"{precision} {label}"] = work / f"{model_name}-{precision}-{label}.tflite"
            log(f"{model_name}: {precision}, {label} {args.pass_name}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                convert_onnx(rewritten, path, precision=precision,
                             calibration=calibration if precision == "int8" else None)
    return paths


def fp32_difference(without: Path, with_: Path, size: int) -> float:
    from mixdeploy import runtimes

    x = np.random.default_rng(0).standard_normal((4, 3, size, size)).astype(np.float32)
    a = runtimes.TfliteRunner(without).run(x)
    b = runtimes.TfliteRunner(with_).run(x)
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def main(argv=None):
    from mixdeploy.bench.host import bench_models
    from mixdeploy.tflite.inspect import inspect_tflite

    from mixdeploy.onnx.rewrite import DEFAULT_PASSES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # a default pass: one outside the default list would make "without" and "with" the same graph
    ap.add_argument("--pass", dest="pass_name", required=True, choices=DEFAULT_PASSES)
    ap.add_argument("--models", nargs="+", default=["mixnet-s", "mixnet-m", "mixnet-l"])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--lowering", default="decompose", help="lower_mixconv's lowering (auto times layers: slower)")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-pass-ab"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)

    models = {}
    for name in args.models:
        for label, path in variants(name, args, args.work).items():
            models[f"{name} {label}"] = path
    log(f"latency: {len(models)} models interleaved, 1 and 2 threads, {args.runs} rounds")
    latency = bench_models({k: str(v) for k, v in models.items()}, threads=(1, 2), runs=args.runs, warmup=3)

    print(f"{args.pass_name}: default passes without -> with, lowering {args.lowering}, {args.size}px, "
          f"one interleaved run of {args.runs} rounds (ratio = without / with: > 1 is faster with the pass)")
    print("| model | precision | TFLite ops changed | 1 thread ms | ratio | 2 threads ms | ratio |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        for precision in ("fp32", "int8"):
            a, b = f"{name} {precision} without", f"{name} {precision} with"
            ha, hb = inspect_tflite(models[a]).op_histogram, inspect_tflite(models[b]).op_histogram
            changed = ", ".join(f"{op} {ha.get(op, 0)}->{hb.get(op, 0)}" for op in sorted(set(ha) | set(hb))
                                if ha.get(op, 0) != hb.get(op, 0)) or "none"
            cells = []
            for t in ("1", "2"):
                cells += [f"{latency[a][t]:.2f} -> {latency[b][t]:.2f}", f"{latency[a][t] / latency[b][t]:.2f}x"]
            print(f"| {name} | {precision} | {changed} | " + " | ".join(cells) + " |")
        diff = fp32_difference(models[f"{name} fp32 without"], models[f"{name} fp32 with"], args.size)
        print(f"{name}: fp32 outputs without vs with, max |difference| / max |output| = {diff:.1e}")


if __name__ == "__main__":
    main()
