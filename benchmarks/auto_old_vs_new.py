"""The host `auto` lowering before and after it timed candidates through the real converter.

    git archive 278992a~1 | tar -x -C /tmp/mixdeploy-old     # the first auto (its own ONNX->TF translator)
    python benchmarks/auto_old_vs_new.py --old-src /tmp/mixdeploy-old [--model mixnet-s] [--size 224]

Both policies measure on this machine, each from an empty cache: the old one in a subprocess
importing the old checkout, the new one here. Then the whole network is converted with
`convert_onnx` (the shipped model's converter) under `split`, the old choices and the new ones
(applied through `policy.use_tuned`), and the three are timed in one interleaved run (LiteRT
XNNPACK, 1 thread, median). Prints Markdown: per-layer choices with each policy's ms, and the
whole-model latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx

OLD_POLICY = """
import json, sys
from mixdeploy.onnx import policy
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec
specs = [MixConvSpec(**s) for s in json.loads(sys.stdin.read())]
precision = sys.argv[1]
choices = policy.choose_lowerings(specs, precision)
cache = policy.load_cache(policy.runtime_id(precision))
print(json.dumps({sig: {"choice": choices[sig], "ms": cache[sig]["ms"]} for sig in choices}))
"""


def old_choices(old_src: Path, specs: list, precision: str, cache_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(old_src), MIXDEPLOY_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", OLD_POLICY, precision], input=json.dumps([asdict(s) for s in specs]),
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def new_choices(specs: list, precision: str, cache_dir: Path) -> dict:
    from mixdeploy.onnx import policy

    os.environ["MIXDEPLOY_CACHE_DIR"] = str(cache_dir)
    choices = policy.choose_lowerings(specs, precision)
    cache = policy.load_cache(policy.runtime_id(precision))
    return {sig: {"choice": choices[sig], "ms": cache[sig]["ms"]} for sig in choices}


def whole_model(exported: onnx.ModelProto, precision: str, choices: dict[str, str] | None, path: Path,
                calibration: np.ndarray) -> Path:
    from mixdeploy.onnx import policy
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    if choices is None:
        rewritten = rewrite(exported, lowering="split").model
    else:
        with policy.use_tuned(policy.TunedChoices(precision, choices)):
            rewritten = rewrite(exported, lowering="auto", runtime=precision).model
    convert_onnx(rewritten, path, precision=precision, calibration=calibration if precision == "int8" else None)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-src", type=Path, required=True, help="a checkout of the first auto (278992a~1)")
    parser.add_argument("--model", default="mixnet-s")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="auto-old-new-") as tmp:
        results = compare(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def compare(args, tmp: Path) -> dict:
    from mixdeploy.bench.host import bench_models
    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec
    from mixdeploy.onnx.rewrite import rewrite

    export_onnx(load_model(args.model).module, args.size, tmp / "model.onnx")
    exported = onnx.load(tmp / "model.onnx")
    specs = [MixConvSpec(**m) for m in rewrite(exported, lowering="split").report.mixconvs]
    distinct = list({s.signature: s for s in specs}.values())
    calibration = np.random.default_rng(0).standard_normal((8, 3, args.size, args.size)).astype(np.float32)
    results = {}
    print(f"# {args.model} at {args.size}: host `auto`, old (own translator) vs new (convert_onnx)\n")
    for precision in args.precisions:
        old = old_choices(args.old_src, distinct, precision, tmp / f"old-cache-{precision}")
        new = new_choices(distinct, precision, tmp / f"new-cache-{precision}")
        print(f"## {precision}\n")
        print("| layer (first of its shape) | kernels | layers | old choice | old ms (split / choice) "
              "| new choice | new ms (split / choice) |")
        print("|---|---|---|---|---|---|---|")
        for spec in distinct:
            o, n = old[spec.signature], new[spec.signature]
            count = sum(s.signature == spec.signature for s in specs)
            print(f"| {spec.name} | {','.join(str(k[0]) for k in spec.kernels)} | {count} | {o['choice']} "
                  f"| {o['ms']['split']:.3f} / {o['ms'][o['choice']]:.3f} | {n['choice']} "
                  f"| {n['ms']['split']:.3f} / {n['ms'][n['choice']]:.3f} |")
        old_map = {sig: v["choice"] for sig, v in old.items()}
        new_map = {sig: v["choice"] for sig, v in new.items()}
        models = {"split": whole_model(exported, precision, None, tmp / f"split_{precision}.tflite", calibration),
                  "old auto": whole_model(exported, precision, old_map, tmp / f"old_{precision}.tflite", calibration)}
        if new_map != old_map:
            models["new auto"] = whole_model(exported, precision, new_map, tmp / f"new_{precision}.tflite",
                                             calibration)
        ms = {label: v["1"] for label, v in bench_models(models, threads=(1,), runs=args.rounds, warmup=3).items()}
        ms.setdefault("new auto", ms["old auto"])     # same choices: the same model
        print(f"\nwhole model, LiteRT XNNPACK 1 thread, median of {args.rounds} interleaved runs"
              + (" (old and new chose alike: one model)" if new_map == old_map else "") + "\n")
        print("| model | ms | split / this |\n|---|---|---|")
        for label, t in ms.items():
            print(f"| {label} | {t:.2f} | {ms['split'] / t:.2f} |")
        print(flush=True)
        results[precision] = {"old": old, "new": new, "whole_model_ms": ms}
    return results


if __name__ == "__main__":
    main()
