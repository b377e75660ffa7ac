"""int8 `default` vs `per-branch` (concat-free MixConvs) on one checkpoint, in one run.

    python benchmarks/concat_free.py                       # the bundled 224-px MixNet-S, 500 test images
    python benchmarks/concat_free.py --images 2000 --lowering decompose

Export + rewrite once (--lowering, default the shipped `auto`), then two int8 models from
`convert_onnx` on the same calibration images (the first --calib Fashion-MNIST train images: one
draw), their agreement with PyTorch fp32 on the first --images test images (mixdeploy.parity.compare),
their TFLite op histograms, and their latency in one interleaved LiteRT run (1 thread).
Writes benchmarks/results/concat_free.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPE_NAMES = ("default", "per-branch")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None):
    import onnx

    from mixdeploy import data, parity, runtimes
    from mixdeploy.bench.host import bench_models
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx
    from mixdeploy.tflite.inspect import inspect_tflite

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--lowering", default="auto")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-concat-free"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "concat_free.json")
    args = ap.parse_args(argv)

    loaded = load_model(str(args.checkpoint))
    pre = loaded.preprocessing
    args.work.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(loaded.module, pre.input_size, args.work / "model.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering=args.lowering, runtime="int8").model
    calibration = data.load_images("fashion-mnist", pre, limit=args.calib, split="train").images
    test = data.load_images("fashion-mnist", pre, limit=args.images, split="test")
    log(f"reference: PyTorch on {len(test.images)} test images")
    reference = runtimes.make_runner(loaded).run(test.images)

    rows, paths = {}, {}
    for name in RECIPE_NAMES:
        path = paths[name] = args.work / f"{name}.tflite"
        log(f"int8 {name}: convert")
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_onnx(rewritten, path, precision="int8", calibration=calibration, recipe=name)
        seconds = time.perf_counter() - started
        logits = runtimes.TfliteRunner(path).run(test.images, batch_size=50)
        metrics = parity.compare(reference, logits, test.labels, backend=name)
        inspection = inspect_tflite(path)
        rows[name] = {"top1_agreement": metrics.top1_agreement, "mean_cosine": metrics.mean_cosine,
                      "max_abs_error": metrics.max_abs_error, "top1": metrics.top1, "top1_drop_points": metrics.top1_drop_points,
                      "convert_seconds": round(seconds, 1), "ops": sum(inspection.op_histogram.values()),
                      "op_histogram": inspection.op_histogram, "notes": converted.notes}
    log("latency: one interleaved run, 1 thread")
    latency = bench_models({name: str(p) for name, p in paths.items()}, threads=(1,), runs=args.runs, warmup=5)
    for name in RECIPE_NAMES:
        rows[name]["ms_1_thread"] = latency[name]["1"]

    base, new = rows["default"], rows["per-branch"]
    ops = sorted(set(base["op_histogram"]) | set(new["op_histogram"]))
    changed = {op: [base["op_histogram"].get(op, 0), new["op_histogram"].get(op, 0)] for op in ops
               if base["op_histogram"].get(op, 0) != new["op_histogram"].get(op, 0)}
    print(f"{args.checkpoint.name}, lowering={args.lowering}, {len(test.images)} test images, "
          f"{len(calibration)} calibration images (one draw)")
    print("| recipe | agreement | top-1 | cosine | max abs err | int8 ms (1 thread) | TFLite ops |")
    print("|---|---|---|---|---|---|---|")
    for name in RECIPE_NAMES:
        r = rows[name]
        print(f"| {name} | {r['top1_agreement'] * 100:.2f}% | {r['top1'] * 100:.2f}% | {r['mean_cosine']:.4f} | "
              f"{r['max_abs_error']:.2f} | {r['ms_1_thread']:.2f} | {r['ops']} |")
    print(f"latency per-branch / default: {new['ms_1_thread'] / base['ms_1_thread']:.3f}x; "
          f"agreement {(new['top1_agreement'] - base['top1_agreement']) * 100:+.2f} points")
    print("op changes (default -> per-branch): " + ", ".join(f"{op} {a}->{b}" for op, (a, b) in changed.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"checkpoint": args.checkpoint.name, "lowering": args.lowering,
                                    "images": len(test.images), "calibration_images": len(calibration),
                                    "rows": rows, "op_changes": changed}, indent=1))


if __name__ == "__main__":
    main()
