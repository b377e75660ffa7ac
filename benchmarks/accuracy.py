"""int8 accuracy at 224 px: each quantization technique alone and combined, over calibration draws.

    python benchmarks/accuracy.py                                  # the bundled 224-px MixNet-S
    python benchmarks/accuracy.py --checkpoints a.pt b.pt c.pt --draws 3 --images 2000
    python benchmarks/accuracy.py --techniques default,avgminmax --calib-counts 64,256

For every checkpoint: export + rewrite once (the shipped `auto` lowering), then for every
technique and calibration draw the int8 model from `convert_onnx`, run by LiteRT on the first
--images Fashion-MNIST test images, against the PyTorch fp32 model (timm's, bit for bit). The
table gives mean and range over draws of top-1, drop, agreement, cosine and max |error|; peer
rows come from benchmarks/results/peers_accuracy.json (benchmarks/peers_accuracy.py) when present;
int8 latency of the default against the first release's recipe (and of the int16x8 and dynamic-range
models against the default, when they run) is timed in one interleaved run.
Writes benchmarks/results/accuracy.{json,md}: a run replaces the entries of the checkpoints it
ran and keeps the others' (and, on the same images and draws, the rows of techniques not run now),
so checkpoints and techniques can be measured one at a time.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402

from mixdeploy.tflite.recipe import RECIPES, QuantRecipe  # noqa: E402

DEFAULT_CHECKPOINTS = [ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt"]
RESULTS = ROOT / "benchmarks" / "results"

# Each technique alone on top of the first release's recipe, then combined; `default` is what ships.
TECHNIQUES: dict[str, QuantRecipe] = {
    "avgminmax": RECIPES["avgminmax"],     # the first release
    "minmax": RECIPES["minmax"],           # TFLite's own calibrator
    "percentile": QuantRecipe("percentile", "percentile", "percentile", bias_correction=False),
    # the clip range of least int8 quantization MSE per tensor (vectors minmax, bias correction)
    "mse": QuantRecipe("mse", "mse", "minmax"),
    "midminmax-everywhere": QuantRecipe("midminmax-everywhere", "midminmax", "midminmax", bias_correction=False),
    "small-minmax": QuantRecipe("small-minmax", "avgminmax", "minmax", bias_correction=False),
    "bias-correction": QuantRecipe("bias-correction", "avgminmax", "avgminmax", bias_correction=True),
    "weight-rounding": QuantRecipe("weight-rounding", "avgminmax", "avgminmax", bias_correction=False,
                                   weight_rounding=True),
    "midminmax+small-minmax": QuantRecipe("midminmax+small-minmax", "midminmax", "minmax", bias_correction=False),
    "midminmax": RECIPES["midminmax"],     # the previous default: midminmax + small-minmax + bias correction
    "midminmax+wr": QuantRecipe("midminmax+wr", "midminmax", "minmax", weight_rounding=True),
    "default": RECIPES["default"],         # trimmed-midminmax + small-minmax + bias correction
    "per-branch": RECIPES["per-branch"],   # default + concat-free MixConvs (each branch its own scale)
}
# Rows of other precisions, beside the int8 techniques: what keeping the activations out of int8
# buys, and its price, timed against `default`: 16-bit activations (LiteRT's reference int16
# kernels; XNNPACK has none) and dynamic range (int8 weights, float activations; no calibration,
# so its draws are identical).
OTHER_PRECISIONS = ("int16x8", "dynamic")
TIMED = ("default", "avgminmax", *OTHER_PRECISIONS)   # the models of draw 0 timed in one interleaved run


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def prepare(checkpoint: Path, work: Path, images: int):
    """Model, its rewritten ONNX (auto lowering, measured once) and the evaluation set."""
    import onnx

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    loaded = load_model(str(checkpoint))
    work.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(loaded.module, loaded.preprocessing.input_size, work / "model.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="auto", runtime="int8")
    return loaded, rewritten, accuracy_data.eval_set(loaded, images)


def conversion(technique: str) -> tuple[str, QuantRecipe | None]:
    """The precision and int8 recipe a technique's model is converted with."""
    return (technique, None) if technique in OTHER_PRECISIONS else ("int8", TECHNIQUES[technique])


def measure(model, technique: str, calibration, evaluation, path: Path) -> dict:
    from mixdeploy import runtimes
    from mixdeploy.tflite.convert import convert_onnx

    precision, recipe = conversion(technique)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert_onnx(model, path, precision=precision, calibration=calibration, recipe=recipe)
    seconds = time.perf_counter() - started
    logits = runtimes.TfliteRunner(path).run(evaluation.images, batch_size=50)
    metrics = accuracy_data.metrics(evaluation, logits, technique)
    return {**accuracy_data.row_metrics(metrics), "convert_seconds": seconds}


def latency_ratio(paths: dict[str, Path]) -> dict:
    """Latency of each model in one interleaved run (median ms, 1 and 2 threads)."""
    from mixdeploy.bench.host import bench_models

    return bench_models({name: str(p) for name, p in paths.items()}, threads=(1, 2), runs=30, warmup=5)


def peer_summaries(ours: dict, peers_file: Path) -> dict[str, dict]:
    """Peer name -> its summary over draws, from benchmarks/peers_accuracy.py's results, when
    they were measured on the same weights (a retrained checkpoint keeps its file name) and the
    same number of test images as our entry `ours`."""
    if not peers_file.is_file():
        return {}
    entry = json.loads(peers_file.read_text()).get(ours["checkpoint"])
    if not entry or (entry["weights_sha256"], entry["images"]) != (ours.get("weights_sha256"), ours["images"]):
        return {}
    errors = {r["peer"]: r["error"] for r in entry["rows"] if "error" in r}
    return {peer: summary or {"error": errors.get(peer, "no result")} for peer, summary in entry["summary"].items()}


def row(name: str, n: int | str, s: dict) -> str:
    if "error" in s:
        return f"| {name} | {n} | 0 | failed: {s['error']} | | | |"

    def cell(key, scale=100.0, digits=2):
        v = s[key]
        return f"{v['mean'] * scale:.{digits}f} ({v['min'] * scale:.{digits}f} to {v['max'] * scale:.{digits}f})"
    return (f"| {name} | {n} | {s['draws']} | {cell('top1_agreement')} | {cell('top1')} | "
            f"{cell('top1_drop_points', 1.0)} | {cell('mean_cosine', 1.0, 4)} |")


def run_checkpoint(checkpoint: Path, args, techniques: list[str], counts: list[int]) -> dict:
    """One checkpoint's entry: every technique x calibration count x draw, and the latency ratio."""
    work = args.work / checkpoint.stem
    log(f"{checkpoint.name}: export + rewrite + reference on {args.images} images")
    loaded, rewritten, evaluation = prepare(checkpoint, work, args.images)
    entry = {"checkpoint": checkpoint.name, "model": loaded.name, "weights_sha256": loaded.weights_sha256,
             "images": args.images, "draws": args.draws,
             "reference_top1": float((evaluation.reference.argmax(1) == evaluation.labels).mean()),
             "lowering": rewritten.report.lowering_choices, "rows": []}
    kept_models = {}
    for count in counts:
        draws = [accuracy_data.calibration_images(loaded.preprocessing, d, count) for d in range(args.draws)]
        for name in techniques:
            runs = []
            for d, calibration in enumerate(draws):
                path = work / f"{name}_{count}_{d}.tflite"
                runs.append(measure(rewritten.model, name, calibration, evaluation, path))
                log(f"  {name} n={count} draw {d}: agreement {runs[-1]['top1_agreement'] * 100:.2f}% "
                    f"drop {runs[-1]['top1_drop_points']:+.2f}")
                if d == 0 and name in TIMED:
                    kept_models[name] = path
            precision, recipe = conversion(name)
            entry["rows"].append({"technique": name, "precision": precision,
                                  "recipe": recipe.to_dict() if recipe else None,
                                  "calibration_images": count, "runs": runs,
                                  "summary": accuracy_data.summarize(runs)})
    if not args.no_latency and {"default", "avgminmax"} <= set(kept_models):
        timing = latency_ratio(kept_models)
        entry["latency_ms"] = timing
        entry["latency_ratio_default_vs_first_release"] = ratios(timing, "default", "avgminmax")
        for precision in OTHER_PRECISIONS:
            if precision in timing:
                entry[f"latency_ratio_{precision}_vs_default"] = ratios(timing, precision, "default")
    return entry


def ratios(timing: dict, model: str, baseline: str) -> dict:
    return {threads: timing[model][threads] / timing[baseline][threads] for threads in timing[baseline]}


def merged(previous: dict, entries: list[dict]) -> dict:
    """The results file after this run, in the order first measured. A checkpoint run now on the same
    images and draws keeps the rows of techniques not run now (and the latency, unless a model it
    timed ran again); its rows run now, or all of them when the counts differ, are replaced. Other checkpoints' entries are kept as they are."""
    by_name = {e["checkpoint"]: {"images": previous.get("images"), "draws": previous.get("draws"), **e}
               for e in previous.get("checkpoints", [])}   # files before per-entry counts had them on top
    for entry in entries:
        by_name[entry["checkpoint"]] = with_kept_rows(by_name.get(entry["checkpoint"]), entry)
    return {"checkpoints": list(by_name.values())}


def with_kept_rows(old: dict | None, new: dict) -> dict:
    same = ("weights_sha256", "images", "draws")   # rows of other weights describe another model
    if not old or tuple(old.get(k) for k in same) != tuple(new[k] for k in same):
        return new
    ran = {(r["technique"], r["calibration_images"]) for r in new["rows"]}
    kept = [r for r in old["rows"] if (r["technique"], r["calibration_images"]) not in ran]
    # the timing compares the models of TIMED: it stays only while none of them was run again
    retimed = "latency_ms" in new or set(TIMED) & {technique for technique, _ in ran}
    latency = {} if retimed else {k: v for k, v in old.items() if k.startswith("latency_")}
    order = [*TECHNIQUES, *OTHER_PRECISIONS]   # the table's order, however they were run
    rows = sorted(kept + new["rows"], key=lambda r: (r["calibration_images"], order.index(r["technique"])
                                                     if r["technique"] in order else len(order)))
    return {**new, **latency, "rows": rows}


def render(document: dict, peers_file: Path) -> str:
    """The markdown table of every checkpoint in the results file, with the peers' rows."""
    lines = ["# int8 accuracy at 224 px (benchmarks/accuracy.py)", "",
             "First N Fashion-MNIST test images; calibration draws of train images; reference: PyTorch fp32 "
             "(= timm). Cells: mean (min to max) over draws.", ""]
    for entry in document["checkpoints"]:
        images, draws = entry["images"], entry["draws"]
        lines += [f"## {entry['checkpoint']} ({entry['model']}, fp32 top-1 {entry['reference_top1'] * 100:.2f}%, "
                  f"{images} test images, {draws} draws)", "",
                  "| technique | calibration images | draws | agreement % | quantized top-1 % | drop (points) | cosine |",
                  "|---|---|---|---|---|---|---|"]
        lines += [row(r["technique"], r["calibration_images"], r["summary"]) for r in entry["rows"]]
        for peer, summary in peer_summaries(entry, peers_file).items():
            lines.append(row(f"peer: {peer}", 64, summary))
        timing, vs_first = entry.get("latency_ms"), entry.get("latency_ratio_default_vs_first_release")
        if timing:
            lines += ["", "latency, one interleaved run (LiteRT, XNNPACK where it has kernels; median ms): " + ", ".join(
                f"{t} thread(s): default {timing['default'][t]:.2f} vs first release {timing['avgminmax'][t]:.2f} "
                f"(x{vs_first[t]:.2f})" for t in timing["default"])]
            for precision in (p for p in OTHER_PRECISIONS if p in timing):
                lines[-1] += f"; {precision} " + ", ".join(
                    f"{timing[precision][t]:.2f} ms at {t} thread(s) "
                    f"(x{entry[f'latency_ratio_{precision}_vs_default'][t]:.1f} of default)" for t in timing[precision])
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=DEFAULT_CHECKPOINTS)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--calib-counts", default="64", help="comma-separated calibration image counts")
    ap.add_argument("--techniques", default=",".join(TECHNIQUES),
                    help=f"comma-separated; also the precisions {', '.join(OTHER_PRECISIONS)} (int16x8 is slow: no XNNPACK kernels)")
    ap.add_argument("--peers", type=Path, default=RESULTS / "peers_accuracy.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-accuracy"))
    ap.add_argument("--out", type=Path, default=RESULTS / "accuracy",
                    help="results without extension; checkpoints already there and not run now are kept")
    ap.add_argument("--no-latency", action="store_true")
    args = ap.parse_args(argv)

    techniques = [t.strip() for t in args.techniques.split(",") if t.strip()]
    known = [*TECHNIQUES, *OTHER_PRECISIONS]
    unknown = [t for t in techniques if t not in known]
    if unknown:
        ap.error(f"unknown technique(s) {unknown}; choose from {', '.join(known)}")
    counts = [int(c) for c in args.calib_counts.split(",")]
    entries = [run_checkpoint(checkpoint, args, techniques, counts) for checkpoint in args.checkpoints]
    results = args.out.with_suffix(".json")
    previous = json.loads(results.read_text()) if results.is_file() else {}
    document = merged(previous, entries)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(document, indent=2) + "\n")
    text = render(document, args.peers)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
