"""Which timm depthwise families go through `mixdeploy export timm:NAME` exactly (docs/byo.md).

For each model: timm builds it (pretrained=False) with randomized BatchNorm statistics (so a
wrong BN fold, padding or activation shows), the state dict is saved, and the whole export chain
runs on `timm:NAME --weights that.pt` at --size px, fp32. The verdict compares the fp32 TFLite
with onnxruntime on the exported, un-rewritten model.onnx, on skimage photos:

  exact    max |tflite - ort| / max |ort| < 1e-4
  note     converts, but off by more than that, or with TRANSPOSE ops / converter notes
  refused  a MixdeployError (the reason is shown)

    python benchmarks/timm_families.py                 # the representative list below, 128 px
    python benchmarks/timm_families.py mnasnet_100 --size 224

Needs timm (the test extra). Writes benchmarks/results/timm_families.{json,md} (a run on some
models replaces their rows).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))   # timm_oracle (tolerant torchvision import), the BN randomizer
RESULTS = ROOT / "benchmarks" / "results"
EXACT = 1e-4

MODELS = {
    "efficientnet": ["efficientnet_b0", "efficientnet_lite0", "efficientnet_es", "efficientnet_b1_pruned",
                     "efficientnet_b0_gn", "efficientnet_b0_g8_gn", "efficientnet_b0_g16_evos", "efficientnet_blur_b0",
                     "efficientnet_cc_b0_4e", "efficientnet_x_b3",
                     "tf_efficientnet_b0", "tf_efficientnet_lite0", "tf_efficientnet_es"],
    "mobilenetv2": ["mobilenetv2_035", "mobilenetv2_100", "mobilenetv2_110d"],
    "mobilenetv3": ["mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv3_rw",
                    "tf_mobilenetv3_large_100", "tf_mobilenetv3_small_minimal_100"],
    "mnasnet": ["mnasnet_small", "mnasnet_100", "semnasnet_100"],
    "tinynet": ["tinynet_e", "tinynet_a"],
}


def family_of(name: str) -> str:
    return next((family for family, names in MODELS.items() if name in names), name.split("_")[0])


def checkpoint_with_random_bn(name: str, size: int, folder: Path) -> Path:
    import torch
    from test_models_timm_parity import randomize_batchnorm
    from timm_oracle import timm

    from mixdeploy import data
    from mixdeploy.preprocess import Preprocessing

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)
    photos = torch.from_numpy(data.default_calibration_images(Preprocessing(input_size=size), 8))
    randomize_batchnorm(model, photos)
    path = folder / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return path


def measure(name: str, size: int, folder: Path) -> dict:
    from mixdeploy import data, runtimes
    from mixdeploy.errors import MixdeployError
    from mixdeploy.pipeline import ExportOptions, run_export
    from mixdeploy.preprocess import Preprocessing, PreprocessingOverrides

    row = {"family": family_of(name), "model": name, "size": size}
    started = time.perf_counter()
    try:
        weights = checkpoint_with_random_bn(name, size, folder)
        out = folder / name
        result = run_export(ExportOptions(source=f"timm:{name}", out_dir=out, weights=str(weights),
                                          preprocessing=PreprocessingOverrides(input_size=size),
                                          precisions=("fp32",), parity_count=4),
                            warn=lambda message: None)
    except MixdeployError as err:
        return {**row, "result": "refused", "reason": short_reason(str(err)),
                "seconds": round(time.perf_counter() - started, 1)}
    images = data.default_calibration_images(Preprocessing.from_dict(result.manifest["preprocessing"]), 4)
    reference = runtimes.OnnxRunner(out / "model.onnx").run(images)
    fp32 = runtimes.TfliteRunner(out / "model_fp32.tflite").run(images)
    rel = float(abs(fp32 - reference).max() / abs(reference).max())
    convert = result.manifest["stages"]["convert"]["fp32"]
    ops = convert["op_histogram"]
    notes = [n for n in convert.get("notes", []) if not n.startswith("input is NHWC")]
    if ops.get("TRANSPOSE"):
        notes.append(f"{ops['TRANSPOSE']} TRANSPOSE ops")
    verdict = "exact" if rel < EXACT and not notes else "note"
    return {**row, "result": verdict, "max_rel_error": rel, "ops_total": sum(ops.values()), "ops": ops,
            "notes": notes, "params": result.manifest["model"]["params"],
            "seconds": round(time.perf_counter() - started, 1)}


def short_reason(message: str) -> str:
    """The converter lists every unsupported node; the table needs the op types."""
    if message.startswith("unsupported ONNX op"):
        ops = re.findall(r"'[^']*' \((\w+)\)", message.split(";")[0])
        return "unsupported ONNX op " + ", ".join(sorted(set(ops)))
    return message.split(";")[0].splitlines()[0][:200]


def markdown(rows: list[dict]) -> str:
    lines = ["| family | model | result | max rel. error | TFLite ops | top ops / reason |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if r["result"] == "refused":
            lines.append(f"| {r['family']} | `{r['model']}` | refused | - | - | {r['reason']} |")
            continue
        top = ", ".join(f"{op} {n}" for op, n in sorted(r["ops"].items(), key=lambda kv: -kv[1])[:5])
        extra = f" ({'; '.join(r['notes'])})" if r["notes"] else ""
        lines.append(f"| {r['family']} | `{r['model']}` | {r['result']}{extra} | {r['max_rel_error']:.1e} | "
                     f"{r['ops_total']} | {top} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="timm model names (default: the representative list)")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    names = args.models or [n for family in MODELS.values() for n in family]
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixdeploy-timm-families-") as tmp:
        for name in names:
            row = measure(name, args.size, Path(tmp))
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "ops"}), flush=True)
    rows = merged_with_earlier_runs(rows)
    (RESULTS / "timm_families.json").write_text(json.dumps(rows, indent=2) + "\n")
    (RESULTS / "timm_families.md").write_text(markdown(rows))
    print(markdown(rows))


def merged_with_earlier_runs(rows: list[dict]) -> list[dict]:
    """A run on some models replaces their rows and keeps the others (MODELS order first)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "timm_families.json"
    by_name = {r["model"]: r for r in (json.loads(path.read_text()) if path.is_file() else [])}
    by_name.update({r["model"]: r for r in rows})
    order = [n for family in MODELS.values() for n in family]
    return sorted(by_name.values(), key=lambda r: (order.index(r["model"]) if r["model"] in order else len(order),
                                                    r["model"]))


if __name__ == "__main__":
    main()
