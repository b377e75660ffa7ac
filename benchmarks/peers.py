"""mixdeploy vs the peer tools on the same MixNet weights, in one run: onnx2tf, litert-torch,
ExecuTorch (XNNPACK) and onnxruntime's quantize_static (QDQ).

Set-up once: `bash benchmarks/setup_peers.sh` (litert-torch, onnx2tf and ExecuTorch each in a
venv: they pin versions that clash with ours; onnxruntime runs here). Then:

    python benchmarks/peers.py                      # the bundled 224-px Fashion-MNIST MixNet-S
    python benchmarks/peers.py --skip onnx2tf       # faster: onnx2tf's int8 run takes minutes

Every tool converts the checkpoint once per resolution (peers through benchmarks/peers_lib,
calibrated on the same first --calib-count train images as `mixdeploy export --calib
fashion-mnist`). Two phases:
  accuracy  at the checkpoint's own resolution, one calibration set: each model on the first
            --eval-count Fashion-MNIST test images, top-1 and agreement with PyTorch (the
            calibration-draw study with spread is benchmarks/peers_accuracy.py);
  speed     at 224x224 (the accuracy phase's models when that is the checkpoint's size):
            conversion wall time, op histogram, file size, and host latency at 1 and 2
            threads, ALL models interleaved in rounds (median of --runs each): the .tflite ones
            in LiteRT + XNNPACK, the ONNX ones (ours fp32, onnxruntime QDQ int8) in onnxruntime
            CPU, the ExecuTorch .pte in executorch.runtime with XNNPACK, batch 1 (a server
            process per thread count, its threadpool sized with _unsafe_reset_threadpool; each
            sample is the call from here, so it includes one pipe round trip, ~0.05 ms).
Prints tables with ratios to mixdeploy int8 and writes benchmarks/results/peers.{json,md}.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _accuracy_data as accuracy_data
import peers_lib
from peers_lib import executorch as executorch_peer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt"
SPEED_SIZE = 224
PEERS = tuple(peers_lib.PEERS)
TOOLS = ("mixdeploy",) + PEERS


def convert_with_mixdeploy(args, size: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "cli", "export", str(args.checkpoint), "--input-size", str(size), "--int8",
           "--calib", "fashion-mnist", "--calib-count", str(args.calib_count), "--parity-count", "50",
           "-o", str(out), "--json"]
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mixdeploy export failed:\n{result.stderr[-3000:]}")
    return {"seconds": time.perf_counter() - start, "fp32": out / "model_fp32.tflite",
            "int8": out / "model_int8.tflite", "onnx": out / "model.onnx"}


def convert_with_peer(args, peer: str, size: int, calib_nchw: np.ndarray, out: Path) -> dict:
    int8 = peers_lib.convert_int8(peer, args.checkpoint, calib_nchw, out, input_size=size, with_float=True)
    facts = peers_lib.read_facts(int8)
    files = {"seconds": facts["seconds"], "int8": int8}
    # onnxruntime's "float model" is the plain ONNX, timed as "onnxruntime fp32" on ours already.
    if facts["fp32_model"] and peer != "onnxruntime-qdq":
        files["fp32"] = Path(facts["fp32_model"])
    return files


def convert_all(args, size: int, out: Path, calib_nchw: np.ndarray) -> dict:
    """Each tool converts the same weights; a tool that fails is reported, not fatal."""
    results = {}
    for tool in TOOLS:
        if tool in args.skip:
            continue
        print(f"[{size}px] converting with {tool} ...", file=sys.stderr, flush=True)
        try:
            if tool == "mixdeploy":
                results[tool] = convert_with_mixdeploy(args, size, out / tool)
            else:
                results[tool] = convert_with_peer(args, tool, size, calib_nchw, out / tool)
        except (RuntimeError, peers_lib.PeerError) as err:  # a tool failing is a result to report
            print(f"  {tool} failed: {err}", file=sys.stderr)
            results[tool] = {"error": str(err)[-500:]}
    return results


def calibration_set(args, preprocessing) -> np.ndarray:
    """The first --calib-count train images: what `mixdeploy export --calib fashion-mnist` uses."""
    from mixdeploy import data

    return data.load_images("fashion-mnist", preprocessing, limit=args.calib_count, split="train").images


def model_files(converted: dict) -> dict[str, tuple[str, Path]]:
    """{"<tool> <precision>": (tool, path)} of every model that was written."""
    models = {}
    for tool, files in converted.items():
        for precision in ("fp32", "int8"):
            if precision in files and Path(files[precision]).is_file():
                models[f"{tool} {precision}"] = (tool, Path(files[precision]))
    return models


def logits_of(tool: str, path: Path, images: np.ndarray) -> np.ndarray:
    if path.suffix == ".pte" or (tool in PEERS and path.suffix == ".onnx"):
        return peers_lib.run_logits(tool, path, images)
    from mixdeploy.runtimes import make_runner

    return make_runner(str(path)).run(images)


def accuracy_phase(args, loaded, out: Path) -> tuple[dict, dict]:
    preprocessing = loaded.preprocessing
    converted = convert_all(args, preprocessing.input_size, out, calibration_set(args, preprocessing))
    evaluation = accuracy_data.eval_set(loaded, args.eval_count)
    rows = {"pytorch": {"top1": float((evaluation.reference.argmax(1) == evaluation.labels).mean())}}
    for label, (tool, path) in model_files(converted).items():
        print(f"[{preprocessing.input_size}px] {label} on {len(evaluation.images)} test images ...", file=sys.stderr, flush=True)
        try:
            logits = logits_of(tool, path, evaluation.images)
        except peers_lib.PeerError as err:
            rows[label] = {"error": str(err)}
            continue
        rows[label] = accuracy_data.metrics(evaluation, logits, label).to_dict()
    errors = {tool: files["error"] for tool, files in converted.items() if "error" in files}
    return {"input_size": preprocessing.input_size, "images": len(evaluation.images), "rows": rows, "errors": errors}, converted


def latency_configs(models: dict[str, tuple[str, Path]], threads, sessions: list):
    """One host.TimedConfig per (model, thread count), in the runtime each model is meant for."""
    from mixdeploy.bench import host

    configs, labels = [], []
    for label, (_, path) in models.items():
        for n in threads:
            if path.suffix == ".tflite":
                _, model_input = host.random_inputs(host.tflite_input_details(str(path)))
                configs.append(host.TimedConfig("litert", n, True, host.litert_runner(str(path), n, True, model_input)))
            elif path.suffix == ".onnx":
                configs.append(host.TimedConfig("onnxruntime", n, None, host.onnxruntime_runner(str(path), n, _random_nchw())))
            else:
                configs.append(host.TimedConfig("executorch", n, None, _executorch_runner(path, n, sessions)))
            labels.append(label)
    return configs, labels


def _random_nchw() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((1, 3, SPEED_SIZE, SPEED_SIZE)).astype(np.float32)


def _executorch_runner(pte: Path, threads: int, sessions: list):
    def make():
        session = executorch_peer.Session(pte, threads=threads)
        sessions.append(session)
        session.logits(_random_nchw())  # the image every timed execute runs on
        return session.time_one_ms, {"threads_in_pool": session.threads}
    return make


def speed_phase(args, loaded, out: Path, accuracy_converted: dict) -> dict:
    from mixdeploy.bench import host
    from mixdeploy.tflite.inspect import inspect_tflite

    if loaded.preprocessing.input_size == SPEED_SIZE:
        converted = accuracy_converted
    else:
        preprocessing = loaded.preprocessing.with_size(SPEED_SIZE)
        converted = convert_all(args, SPEED_SIZE, out, calibration_set(args, preprocessing))
    models = model_files(converted)
    if "mixdeploy" in converted and "onnx" in converted["mixdeploy"]:
        models["onnxruntime fp32"] = ("mixdeploy", converted["mixdeploy"]["onnx"])
    print(f"[{SPEED_SIZE}px] timing {len(models)} models at 1 and 2 threads, interleaved ...", file=sys.stderr, flush=True)
    sessions: list = []
    try:
        configs, labels = latency_configs(models, (1, 2), sessions)
        results = host.run_interleaved(configs, args.runs, warmup=5)
    finally:
        for session in sessions:
            session.close()
    latency: dict[str, dict[str, float]] = {}
    for label, result in zip(labels, results):
        latency.setdefault(label, {})[str(result.threads)] = result.median_ms
    rows = {}
    for label, (tool, path) in models.items():
        histogram = inspect_tflite(path).op_histogram if path.suffix == ".tflite" else _onnx_histogram(path)
        precision = label.rsplit(" ", 1)[1]
        seconds = converted[tool].get("seconds") if precision == "int8" else None
        rows[label] = {"convert_seconds": seconds, "file_mb": path.stat().st_size / 1e6,
                       "ops": sum(histogram.values()) if histogram else None, "op_histogram": histogram}
    return {"input_size": SPEED_SIZE, "rows": rows, "latency_ms": latency,
            "errors": {tool: files["error"] for tool, files in converted.items() if "error" in files}}


def _onnx_histogram(path: Path) -> dict | None:
    if path.suffix != ".onnx":
        return None  # a .pte: its XNNPACK delegate blobs hold the ops
    import onnx

    from mixdeploy.onnx.graph import op_histogram

    return op_histogram(onnx.load(str(path)))


def render_markdown(report: dict) -> str:
    lines = ["# mixdeploy vs peers (generated by benchmarks/peers.py)", "", f"Checkpoint: {report['checkpoint']}", ""]
    acc = report["accuracy"]
    lines += [f"## Accuracy: Fashion-MNIST test, {acc['images']} images at {acc['input_size']}px, "
              f"calibrated on the first {report['calib_count']} train images", "",
              "| model | top-1 | top-1 agreement with PyTorch | logit cosine |", "|---|---|---|---|"]
    for name, m in acc["rows"].items():
        if "error" in m:
            lines.append(f"| {name} | failed: {m['error']} | | |")
        else:
            lines.append(f"| {name} | {m['top1']:.2%} | {m.get('top1_agreement', 1.0):.2%} | {m.get('mean_cosine', 1.0):.4f} |")
    for tool, error in {**acc["errors"], **report["speed"]["errors"]}.items():
        lines.append(f"| {tool} | failed: {error.splitlines()[0][:200]} | | |")
    speed = report["speed"]
    lines += ["", f"## Speed at {speed['input_size']}x{speed['input_size']} (host CPU, batch 1; median ms of "
              f"{report['runs']} interleaved rounds; ratio to mixdeploy int8)", "",
              "| model | runtime | convert s | file MB | ops | 1 thread ms | 2 threads ms | 1-thread ratio |",
              "|---|---|---|---|---|---|---|---|"]
    lat = speed["latency_ms"]
    ours = lat.get("mixdeploy int8", {}).get("1")
    for name, row in speed["rows"].items():
        one, two = lat.get(name, {}).get("1"), lat.get(name, {}).get("2")
        ratio = f"{one / ours:.2f}x" if one and ours else "-"
        secs = f"{row['convert_seconds']:.0f}" if row["convert_seconds"] else "-"
        ops = row["ops"] if row["ops"] is not None else "-"
        lines.append(f"| {name} | {runtime_of(name)} | {secs} | {row['file_mb']:.2f} | {ops} | "
                     f"{one:.2f} | {two:.2f} | {ratio} |")
    lines += ["", "Op histograms:", ""]
    for name, row in speed["rows"].items():
        if row["op_histogram"]:
            top = ", ".join(f"{k} {v}" for k, v in sorted(row["op_histogram"].items(), key=lambda kv: -kv[1]))
            lines.append(f"- **{name}**: {top}")
    return "\n".join(lines) + "\n"


def runtime_of(name: str) -> str:
    """What runs a timed model, from its label."""
    if name.startswith("executorch"):
        return "executorch.runtime + XNNPACK"
    if name.startswith("onnxruntime"):
        return "onnxruntime CPU"
    return "LiteRT + XNNPACK"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT,
                        help="a mixdeploy checkpoint (names its model and preprocessing)")
    parser.add_argument("--calib-count", type=int, default=64)
    parser.add_argument("--eval-count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--skip", nargs="*", default=[], choices=PEERS)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    from mixdeploy.models import load_model

    loaded = load_model(str(args.checkpoint))
    work = args.out / "work" / "peers"
    shutil.rmtree(work, ignore_errors=True)
    accuracy, converted = accuracy_phase(args, loaded, work / "accuracy")
    report = {"checkpoint": args.checkpoint.name, "model": loaded.name, "calib_count": args.calib_count,
              "runs": args.runs, "host": _host_info(), "accuracy": accuracy,
              "speed": speed_phase(args, loaded, work / "speed", converted)}
    args.out.mkdir(parents=True, exist_ok=True)
    from mixdeploy.atomic import write_json_atomic, write_text_atomic

    write_json_atomic(args.out / "peers.json", report)
    markdown = render_markdown(report)
    write_text_atomic(args.out / "peers.md", markdown)
    print(markdown)


def _host_info() -> dict:
    from mixdeploy.bench.host import host_info

    return host_info()


if __name__ == "__main__":
    main()
