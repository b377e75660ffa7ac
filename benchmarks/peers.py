"""mixdeploy vs onnx2tf vs litert-torch on the same MixNet weights, in one run.

Set-up once: `bash benchmarks/setup_peers.sh` (each peer in its own venv: they pin versions
that clash with ours). Then:

    python benchmarks/peers.py                      # bundled Fashion-MNIST MixNet-S
    python benchmarks/peers.py --skip onnx2tf       # faster: onnx2tf's int8 run takes minutes

Two phases, both on the same weights:
  accuracy  at the checkpoint's own resolution: each tool's fp32 and full-int8 model on
            Fashion-MNIST test images: top-1 and agreement with PyTorch;
  speed     at 224x224: conversion wall time of each tool, op histogram, file size, and host
            latency (LiteRT + XNNPACK, 1 and 2 threads, all models interleaved in rounds, median
            of --runs each), with onnxruntime fp32 on the ONNX as the reference runtime.
Prints tables with ratios to mixdeploy and writes benchmarks/results/peers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ONNX2TF = ROOT / ".venv-onnx2tf" / "bin" / "onnx2tf"
LITERT_TORCH_PY = ROOT / ".venv-litert-torch" / "bin" / "python"
DEFAULT_WEIGHTS = ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist.pt"
TOOLS = ("mixdeploy", "onnx2tf", "litert-torch")


def timed(cmd: list[str], cwd: Path | None = None, env_path: Path | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def convert_with_mixdeploy(args, size: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cli", "export", args.model, "--weights", str(args.weights),
           "--input-size", str(size), "--int8", "--calib", "fashion-mnist", "--calib-count",
           str(args.calib_count), "--parity-count", "50", "-o", str(out), "--json"]
    seconds = timed(cmd, cwd=ROOT)
    return {"seconds": seconds, "fp32": out / "model_fp32.tflite", "int8": out / "model_int8.tflite",
            "onnx": out / "model.onnx"}


def convert_with_onnx2tf(onnx_path: Path, calib01_nhwc: np.ndarray, out: Path, mean, std) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    # onnx2tf downloads a calibration sample at every conversion of a 3-channel model unless a
    # file of this name is in its working folder: plant one made from our calibration images.
    sample = np.stack([_resize(img, 128) for img in calib01_nhwc[:20]]).astype(np.float32)
    np.save(out / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)
    calib_file = out / "calib_nhwc01.npy"
    np.save(calib_file, calib01_nhwc.astype(np.float32))
    mean_arg = "[[[[" + ",".join(map(str, mean)) + "]]]]"
    std_arg = "[[[[" + ",".join(map(str, std)) + "]]]]"
    base = [str(ONNX2TF), "-i", str(onnx_path), "-o", str(out / "saved_model"), "-n"]
    float_seconds = timed(base, cwd=out)
    int8_seconds = timed(base + ["-oiqt", "-cind", "input", str(calib_file), mean_arg, std_arg], cwd=out)
    stem = onnx_path.stem
    return {"seconds_fp32": float_seconds, "seconds": int8_seconds,
            "fp32": out / "saved_model" / f"{stem}_float32.tflite",
            "int8": out / "saved_model" / f"{stem}_full_integer_quant.tflite"}


def convert_with_litert_torch(args, size: int, calib_nchw: np.ndarray, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    calib_file = out / "calib_nchw.npy"
    np.save(calib_file, calib_nchw.astype(np.float32))
    fp32, int8 = out / "model_fp32.tflite", out / "model_int8.tflite"
    cmd = [str(LITERT_TORCH_PY), str(ROOT / "benchmarks" / "_litert_torch_convert.py"), "--model", args.model,
           "--weights", str(args.weights), "--input-size", str(size), "--calib", str(calib_file),
           "--out-fp32", str(fp32), "--out-int8", str(int8)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"litert-torch failed:\n{result.stderr[-3000:]}")
    times = json.loads(result.stdout.strip().splitlines()[-1])
    return {"seconds": time.perf_counter() - start, "seconds_fp32": times["fp32_seconds"],
            "seconds_int8_only": times["int8_seconds"], "fp32": fp32, "int8": int8}


def _resize(image_hwc: np.ndarray, size: int) -> np.ndarray:
    import tensorflow as tf

    return tf.image.resize(image_hwc, (size, size)).numpy()


def convert_all(args, size: int, out: Path, calib) -> dict:
    """Each tool converts the same weights; a tool that fails is reported, not fatal."""
    results = {}
    steps = {
        "mixdeploy": lambda: convert_with_mixdeploy(args, size, out / "mixdeploy"),
        "onnx2tf": lambda: convert_with_onnx2tf(results["mixdeploy"]["onnx"], calib["nhwc01"],
                                                out / "onnx2tf", calib["mean"], calib["std"]),
        "litert-torch": lambda: convert_with_litert_torch(args, size, calib["nchw"], out / "litert-torch"),
    }
    for tool, step in steps.items():
        if tool in args.skip:
            continue
        print(f"[{size}px] converting with {tool} ...", file=sys.stderr, flush=True)
        try:
            results[tool] = step()
        except Exception as err:  # a peer failing is a result to report
            print(f"  {tool} failed: {err}", file=sys.stderr)
            results[tool] = {"error": str(err)[-500:]}
    return results


def calibration_set(args, preprocessing) -> dict:
    from mixdeploy import data

    images = data.load_images("fashion-mnist", preprocessing, limit=args.calib_count, split="train").images
    mean = np.asarray(preprocessing.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(preprocessing.std, np.float32).reshape(1, 3, 1, 1)
    images01 = images * std + mean
    return {"nchw": images, "nhwc01": images01.transpose(0, 2, 3, 1), "mean": preprocessing.mean,
            "std": preprocessing.std}


def accuracy_phase(args, loaded, out: Path) -> dict:
    from mixdeploy import data, parity, runtimes

    preprocessing = loaded.preprocessing
    calib = calibration_set(args, preprocessing)
    converted = convert_all(args, preprocessing.input_size, out, calib)
    test = data.load_images("fashion-mnist", preprocessing, limit=args.eval_count, split="test")
    reference = runtimes.TorchRunner(loaded.module).run(test.images)
    rows = {"pytorch": {"top1": float((reference.argmax(1) == test.labels).mean())}}
    for tool, files in converted.items():
        for precision in ("fp32", "int8"):
            if "error" in files or not Path(files[precision]).is_file():
                continue
            logits = runtimes.TfliteRunner(files[precision]).run(test.images)
            metrics = parity.compare(reference, logits, labels=test.labels).to_dict()
            rows[f"{tool} {precision}"] = metrics
    return {"input_size": preprocessing.input_size, "images": len(test.images), "rows": rows}


def speed_phase(args, loaded, out: Path) -> dict:
    from mixdeploy.bench.host import bench_models
    from mixdeploy.tflite.inspect import inspect_tflite

    preprocessing = loaded.preprocessing.with_size(224)
    calib = calibration_set(args, preprocessing)
    converted = convert_all(args, 224, out, calib)
    models = {}
    for tool, files in converted.items():
        if "error" in files:
            continue
        for precision in ("fp32", "int8"):
            if Path(files[precision]).is_file():
                models[f"{tool} {precision}"] = Path(files[precision])
    print(f"[224px] timing {len(models)} models, interleaved ...", file=sys.stderr, flush=True)
    onnx_path = converted.get("mixdeploy", {}).get("onnx")
    timings = bench_models(models, threads=(1, 2), runs=args.runs, onnx_path=onnx_path)
    rows = {}
    for label, path in models.items():
        facts = inspect_tflite(path)
        tool, precision = label.rsplit(" ", 1)
        files = converted[tool]
        rows[label] = {
            "convert_seconds": files.get("seconds_fp32" if precision == "fp32" else "seconds"),
            "file_mb": path.stat().st_size / 1e6,
            "ops": sum(facts.op_histogram.values()),
            "op_histogram": facts.op_histogram,
        }
    return {"input_size": 224, "rows": rows, "latency_ms": timings,
            "mixdeploy_end_to_end_int8_seconds": converted.get("mixdeploy", {}).get("seconds")}


def render_markdown(report: dict) -> str:
    lines = ["# mixdeploy vs peers (generated by benchmarks/peers.py)", ""]
    acc = report["accuracy"]
    lines += [f"## Accuracy: Fashion-MNIST test, {acc['images']} images at {acc['input_size']}px", "",
              "| model | top-1 | top-1 agreement with PyTorch | logit cosine |", "|---|---|---|---|"]
    for name, m in acc["rows"].items():
        lines.append(f"| {name} | {m['top1']:.2%} | {m.get('top1_agreement', 1.0):.2%} | {m.get('mean_cosine', 1.0):.4f} |")
    speed = report["speed"]
    lines += ["", "## Speed at 224x224 (host CPU, LiteRT + XNNPACK; median ms, ratio to mixdeploy int8)", "",
              "| model | convert s | file MB | ops | 1 thread ms | 2 threads ms | 1-thread ratio |",
              "|---|---|---|---|---|---|---|"]
    lat = speed["latency_ms"]
    ours = lat.get("mixdeploy int8", {}).get("1")
    for name, row in speed["rows"].items():
        one, two = lat.get(name, {}).get("1"), lat.get(name, {}).get("2")
        ratio = f"{one / ours:.2f}x" if one and ours else "-"
        secs = f"{row['convert_seconds']:.0f}" if row["convert_seconds"] else "-"
        lines.append(f"| {name} | {secs} | {row['file_mb']:.2f} | {row['ops']} | {one:.2f} | {two:.2f} | {ratio} |")
    if "onnxruntime fp32" in lat:
        ort = lat["onnxruntime fp32"]
        lines.append(f"| onnxruntime fp32 (ONNX) | - | - | - | {ort['1']:.2f} | {ort['2']:.2f} | "
                     f"{ort['1'] / ours:.2f}x |" if ours else "")
    lines += ["", "Op histograms:", ""]
    for name, row in speed["rows"].items():
        top = ", ".join(f"{k} {v}" for k, v in sorted(row["op_histogram"].items(), key=lambda kv: -kv[1]))
        lines.append(f"- **{name}**: {top}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mixnet-s")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--eval-count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=[], choices=TOOLS[1:])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    for tool, needed in (("onnx2tf", ONNX2TF), ("litert-torch", LITERT_TORCH_PY)):
        if tool not in args.skip and not needed.exists():
            sys.exit(f"{needed} is missing: run `bash benchmarks/setup_peers.sh` or pass --skip {tool}")

    from mixdeploy.models import load_model

    loaded = load_model(args.model, weights=str(args.weights))
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    report = {"model": args.model, "weights": str(args.weights.name),
              "accuracy": accuracy_phase(args, loaded, work / "accuracy"),
              "speed": speed_phase(args, loaded, work / "speed")}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(report, indent=2, default=str))
    markdown = render_markdown(report)
    (args.out / "peers.md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
