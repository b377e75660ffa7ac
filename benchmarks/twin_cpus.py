"""ARM64 twin vs x86 host LiteRT, per qemu CPU model: the table in docs/bench.md.

    python benchmarks/twin_cpus.py out/mixnet-s/model_fp32.tflite out/mixnet-s/model_int8.tflite \
        --cpus cortex-a76,neoverse-n1,max --count 200

For each model and CPU: top-1 agreement with host LiteRT on the same input bytes, cosine, max abs
error, how many output values differ (int8: by how many quantization steps), and the twin's wall
time per image (emulation cost on this machine, not a device latency). Inputs: Fashion-MNIST test
images with the preprocessing from the manifest.json beside each model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def images_for(tflite_path: Path, count: int):
    from mixdeploy import data
    from mixdeploy.artifacts import ExportFolder

    preprocessing = ExportFolder.beside(tflite_path).preprocessing()
    if preprocessing is None:
        raise SystemExit(f"{tflite_path}: no manifest.json beside it (export with `mixdeploy export`)")
    return data.load_images("fashion-mnist", preprocessing, limit=count)


def seconds_per_image(tflite_path: Path, images, cpu: str, full_run_seconds: float) -> float:
    """(t(N) - t(1)) / (N - 1): the guest's start and model load taken out."""
    from mixdeploy.bench import twin

    started = time.perf_counter()
    twin.compare_with_host(tflite_path, images.images[:1], cpu=cpu)
    one = time.perf_counter() - started
    return (full_run_seconds - one) / max(1, len(images) - 1)


def main(argv=None) -> int:
    from mixdeploy.bench import twin

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--cpus", default="cortex-a76,neoverse-n1,max")
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args(argv)
    rows = []
    cpus = args.cpus.split(",")
    for path in args.models:
        images = images_for(path, args.count)
        first = None                      # the first CPU's raw outputs: do the others equal them?
        for cpu in cpus:
            started = time.perf_counter()
            result = twin.compare_with_host(path, images.images, cpu=cpu)
            seconds = time.perf_counter() - started
            p, diff = result.vs_host, result.vs_host.output_difference
            steps = "-" if diff.max_steps is None else str(diff.max_steps)
            per_image = seconds_per_image(path, images, cpu, seconds)
            raw = result.run.raw_outputs[0]
            first = raw if first is None else first
            same = "yes" if np.array_equal(raw, first) else "no"
            rows.append(f"| {path.parent.name}/{path.name} | {cpu} ({result.run.inside['cpu_model']}; "
                        f"{', '.join(result.run.inside['features']) or '-'}) | {p.count} | "
                        f"{p.top1_agreement * 100:.2f}% | {p.cosine_min:.6f} | {p.max_abs_err:.3g} | "
                        f"{diff.differing}/{diff.values} ({diff.fraction * 100:.1f}%) | {steps} | {same} | "
                        f"{per_image * 1000:.0f} ms |")
            print(rows[-1], flush=True)
    print("\n| model | qemu CPU (MIDR; features) | inputs | top-1 agreement | cosine min | max abs err "
          f"| output values differing | max int8 steps | outputs = {cpus[0]}'s | twin time / image |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
