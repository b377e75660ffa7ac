"""Host latency of MixNet-S/M/L, fp32 vs int8 TFLite (LiteRT + XNNPACK), with onnxruntime beside.

Exports each model with the project's stage functions (load_model, export_onnx, rewrite,
convert_onnx fp32 + int8; reused when the files are already in --out), then times every
.tflite with mixdeploy.bench.host.bench_host and prints a table with ratios:
int8 speed-up over fp32, LiteRT fp32 vs onnxruntime on the same (rewritten) ONNX graph, each
model against MixNet-S, and milliseconds per GMAC.

    python benchmarks/host_latency.py                       # mixnet-s/m/l at 224, 1 thread
    python benchmarks/host_latency.py --models mixnet-s --input-size 128 --threads 1,2 --runs 30

Host numbers compare variants on one machine; they are not phone latencies (see docs/bench.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mixdeploy.bench.host import bench_host
from mixdeploy.bench.report import MAC_BUDGET, macs_for


def export_if_needed(model: str, out_dir: Path, input_size: int, calib_count: int, lowering: str) -> Path:
    """The exported folder for `model` (model_fp32.tflite, model_int8.tflite, model.opt.onnx).

    Uses the stage functions (load_model -> export_onnx -> rewrite -> convert_onnx) rather than
    the whole `mixdeploy export`, whose parity step this benchmark does not need.
    """
    wanted = [out_dir / "model_fp32.tflite", out_dir / "model_int8.tflite", out_dir / "manifest.json"]
    if all(p.is_file() for p in wanted):
        return out_dir
    import onnx

    from mixdeploy import data
    from mixdeploy.atomic import write_json_atomic
    from mixdeploy.flops import count_macs
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    Console(stderr=True).print(f"exporting {model} at {input_size}px into {out_dir} (fp32 + int8) ...")
    loaded = load_model(model, input_size=input_size)
    macs = count_macs(loaded.module, input_size=input_size)
    exported = export_onnx(loaded.module, input_size, out_dir / "model.onnx")
    # int8 is what ships, so `auto` picks each MixConv's lowering by int8 timings (as `mixdeploy export --int8`)
    rewritten = rewrite(onnx.load(exported.path), lowering=lowering, runtime="int8").model
    onnx.save(rewritten, out_dir / "model.opt.onnx")
    calibration = data.default_calibration_images(loaded.preprocessing, calib_count)
    convert_onnx(rewritten, out_dir / "model_fp32.tflite", precision="fp32")
    convert_onnx(rewritten, out_dir / "model_int8.tflite", precision="int8", calibration=calibration)
    write_json_atomic(out_dir / "manifest.json", {
        "model": {"name": loaded.name, "source": model, "macs": int(macs.total), "params": int(macs.params)},
        "preprocessing": loaded.preprocessing.to_dict(), "lowering": lowering,
        "calibration_images": calib_count})
    return out_dir


def measure(folder: Path, threads: list[int], runs: int, warmup: int, with_ort: bool) -> dict:
    onnx_path = folder / "model.opt.onnx"
    fp32 = bench_host(folder / "model_fp32.tflite", threads=threads, runs=runs, warmup=warmup,
                      baselines=("onnxruntime",) if with_ort and onnx_path.is_file() else (),
                      onnx_path=onnx_path if onnx_path.is_file() else None)
    int8 = bench_host(folder / "model_int8.tflite", threads=threads, runs=runs, warmup=warmup)
    out = {"macs": macs_for(folder / "model_fp32.tflite"), "by_threads": {}}
    for n in threads:
        pick = lambda result, runtime: next((c for c in result.configs
                                             if c.runtime == runtime and c.threads == n), None)
        ort = pick(fp32, "onnxruntime")
        out["by_threads"][n] = {"fp32": pick(fp32, "litert").median_ms, "int8": pick(int8, "litert").median_ms,
                                "ort_fp32": ort.median_ms if ort else None}
    return out


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def print_table(results: dict, threads: list[int], input_size: int) -> None:
    table = Table(title=f"Host latency, LiteRT + XNNPACK, {input_size}px, median ms "
                        f"(MAC budget {MAC_BUDGET / 1e6:.0f}M)")
    for column in ("model", "threads", "MACs", "fp32 ms", "int8 ms", "int8 speed-up",
                   "ORT fp32 ms", "LiteRT/ORT fp32", "fp32 vs first", "int8 ms/GMAC"):
        table.add_column(column, justify="left" if column == "model" else "right")
    first = next(iter(results.values()))
    for model, facts in results.items():
        for n in threads:
            t = facts["by_threads"][n]
            macs = facts["macs"]
            table.add_row(model, str(n), f"{macs / 1e6:.0f}M" if macs else "-", f"{t['fp32']:.2f}",
                          f"{t['int8']:.2f}", ratio(t["fp32"], t["int8"]),
                          f"{t['ort_fp32']:.2f}" if t["ort_fp32"] else "-", ratio(t["fp32"], t["ort_fp32"]),
                          ratio(t["fp32"], first["by_threads"][n]["fp32"]),
                          f"{t['int8'] / (macs / 1e9):.1f}" if macs else "-")
    Console(width=200).print(table)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mixnet-s,mixnet-m,mixnet-l")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--threads", default="1")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--calib-count", type=int, default=16)
    parser.add_argument("--lowering", default="auto",
                        help="MixConv lowering for the export (auto: measured per layer, as mixdeploy export)")
    parser.add_argument("--no-ort", action="store_true", help="skip the onnxruntime column")
    parser.add_argument("--out", type=Path, default=Path("out/host_latency"))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    results = {}
    for model in args.models.split(","):
        folder = export_if_needed(model, args.out / f"{model}-{args.input_size}", args.input_size,
                                  args.calib_count, args.lowering)
        results[model] = measure(folder, threads, args.runs, args.warmup, not args.no_ort)
    print_table(results, threads, args.input_size)
    if args.json:
        from mixdeploy.atomic import write_json_atomic
        write_json_atomic(args.json, {"input_size": args.input_size, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
