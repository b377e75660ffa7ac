"""The stem's weights projected onto what grey inputs can see: does the smaller stem help int8?

    python benchmarks/stem_projection.py                    # the three 224 checkpoints, 6 draws
    python benchmarks/stem_projection.py --checkpoints a.pt --draws 1

A model trained on grey images replicated to 3 channels (Fashion-MNIST the common way) sees, per
pixel, x_c = (g - mean_c) / std_c = a_c g + b_c: the three input channels are affine copies of one
grey value g. A stem weight vector w (over the 3 input channels, for one output channel and one
tap) acts on it as g (w . a) + (w . b); any d with d . a = 0 and d . b = 0, i.e. d along a x b,
changes nothing, not even at the zero-padded border (a padded tap reads 0 in every channel, before
and after). Training never moves w along d (its gradient has no component there), so whatever the
initialisation put there stays: on our checkpoints 54-58% of the stem weights' L2 norm. Per-channel
int8 scales follow max |w|, and the int8 input's per-channel rounding noise reaches the output
through w, so removing that component is exact in float on grey inputs and lowers both errors.

For each checkpoint: the projected float module (its max |logit change| on the test images is
printed and stored), exported and rewritten as accuracy.py does (`auto`), converted with the
`default` recipe on accuracy.py's calibration draws, judged on the same test images against the
*original* PyTorch fp32 model; `default` without the projection comes from --baseline (per-draw
deltas are exact only when it was measured on the same machine: see equalization.py).
Writes benchmarks/results/stem_projection.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402
import accuracy  # noqa: E402
import equalization  # noqa: E402

from mixdeploy import runtimes  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def blind_direction(mean, std) -> np.ndarray:
    """The unit 3-vector d that grey inputs normalised by (mean, std) cannot see: d . a = d . b = 0
    for x_c = a_c g + b_c, a = 1 / std, b = -mean / std."""
    a = 1.0 / np.asarray(std, np.float64)
    b = -np.asarray(mean, np.float64) / np.asarray(std, np.float64)
    d = np.cross(a, b)
    return d / np.linalg.norm(d)


def blind_fraction(conv: torch.nn.Conv2d, d: np.ndarray) -> float:
    """Share of the conv's weight L2 norm along d (over its input channels)."""
    w = conv.weight.detach().double().numpy()
    return float(np.linalg.norm(np.einsum("oikl,i->okl", w, d)) / np.linalg.norm(w))


def project_stem(conv: torch.nn.Conv2d, d: np.ndarray) -> None:
    """Remove every weight vector's component along d, in place."""
    if conv.in_channels != 3 or conv.groups != 1:
        raise ValueError(f"the stem must be a dense conv over 3 input channels, not {conv}")
    with torch.no_grad():
        dt = torch.tensor(d, dtype=conv.weight.dtype)
        along = torch.einsum("oikl,i->okl", conv.weight, dt)
        conv.weight -= along[:, None] * dt[None, :, None, None]


def stem_scale_ratio(before: torch.Tensor, after: torch.Tensor) -> float:
    """Mean over output channels of max |w| after / before: what the int8 weight scale shrinks by."""
    flat = lambda w: w.detach().abs().reshape(w.shape[0], -1).amax(1)  # noqa: E731
    return float((flat(after) / flat(before)).mean())


def run_checkpoint(checkpoint: Path, args) -> dict:
    import onnx

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    loaded = load_model(str(checkpoint))
    evaluation = accuracy_data.eval_set(loaded, args.images)      # reference: the original module
    p = loaded.preprocessing
    d = blind_direction(p.mean, p.std)
    stem = loaded.module.conv_stem
    before = stem.weight.detach().clone()
    fraction = blind_fraction(stem, d)
    project_stem(stem, d)
    change = float(np.abs(runtimes.TorchRunner(loaded.module).run(evaluation.images) - evaluation.reference).max())
    accuracy.log(f"{checkpoint.name}: {fraction * 100:.0f}% of the stem's norm removed, max fp32 logit change {change:.1e}")
    work = args.work / checkpoint.stem
    work.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(loaded.module, p.input_size, work / "projected.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="auto", runtime="int8")
    runs = []
    for draw in range(args.draws):
        images = accuracy_data.calibration_images(p, draw, 64)
        runs.append(accuracy.measure(rewritten.model, "default", images, evaluation, work / f"projected_{draw}.tflite"))
        accuracy.log(f"  {checkpoint.name} draw {draw}: agreement {runs[-1]['top1_agreement'] * 100:.2f}% "
                     f"drop {runs[-1]['top1_drop_points']:+.2f}")
    return {"checkpoint": checkpoint.name, "model": loaded.name, "images": args.images, "draws": args.draws,
            "blind_fraction": fraction, "stem_scale_ratio": stem_scale_ratio(before, stem.weight),
            "max_logit_change_fp32": change,
            "baseline": equalization.baseline_runs(args.baseline, checkpoint, args.images, args.draws),
            "runs": runs, "summary": accuracy_data.summarize(runs)}


def render(document: dict) -> str:
    lines = ["# The stem projected onto grey inputs, before int8 (benchmarks/stem_projection.py)", "",
             "`default` recipe, `auto` lowering, draws of 64 calibration images; agreement with the original "
             "PyTorch fp32 model. Per draw: agreement % (change against `default` without the projection on "
             "the same draw).", "",
             "| checkpoint | stem norm removed | max int8 weight scale after / before | max fp32 logit change | "
             "`default` % | projected % | per draw | drop (points) | cosine |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in document["checkpoints"]:
        s, base = e["summary"], e["baseline"]
        base_mean = f"{accuracy_data.summarize(base)['top1_agreement']['mean'] * 100:.2f}" if base else "-"
        lines.append(f"| {e['checkpoint']} | {e['blind_fraction'] * 100:.0f}% | {e['stem_scale_ratio']:.3f} | "
                     f"{e['max_logit_change_fp32']:.1e} | {base_mean} | {s['top1_agreement']['mean'] * 100:.2f} | "
                     f"{equalization.per_draw(e['runs'], base)} | {s['top1_drop_points']['mean']:.2f} | "
                     f"{s['mean_cosine']['mean']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=equalization.CHECKPOINTS)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=6)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-stem-projection"))
    ap.add_argument("--baseline", type=Path, default=RESULTS / "accuracy_default_6draws.json",
                    help="accuracy.py's results holding the `default` rows of the same draws")
    ap.add_argument("--out", type=Path, default=RESULTS / "stem_projection")
    args = ap.parse_args(argv)
    document = {"checkpoints": [run_checkpoint(c, args) for c in args.checkpoints]}
    accuracy_data.write_results(args.out, document, render)


if __name__ == "__main__":
    main()
