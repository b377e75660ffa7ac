"""Residual-stream equalization before int8: does evening out channel ranges help the default recipe?

    python benchmarks/equalization.py                       # the three 224 checkpoints, alpha 1 and 0.5
    python benchmarks/equalization.py --checkpoints a.pt --alphas 1 --draws 1

TFLite quantizes each activation tensor with one scale. In a MixNet the tensors between blocks
(the residual stream: a block's projection 1x1 + BN, the residual ADDs, the stem's BN+ReLU) carry
no nonlinearity up to the next block's first conv, so channel c of a stream may be multiplied by
any s_c > 0 exactly: the producers' BN scale and shift by s_c, the consumers' input channel c
(the expansion 1x1, or a depthwise-separable block's depthwise conv, or conv_head) by 1 / s_c.
With s_c = r_c^-alpha * w_c^(1 - alpha) (r_c: the channel's mean per-image max |x| on calibration
data; w_c: consumer column c's largest |weight| relative to its output row's, the thing
per-channel weight quantization cares about; alpha 1 evens the ranges out fully, 0.5 is
SmoothQuant's balance), normalised to a geometric mean of 1 and clipped to [1 / clip, clip].

For each checkpoint and alpha: the equalized float module (its max |logit change| is printed and
stored), exported and rewritten as accuracy.py does (`auto`), converted with the `default` recipe
on accuracy.py's calibration draws, evaluated on the same test images against the *original*
PyTorch fp32 model; the `default` row without equalization comes from accuracy.py's results
(--baseline, benchmarks/results/accuracy.json: the same draws and images; per-draw deltas are exact
only when that file was measured on the same machine, since the calibration's float run rounds
differently on another CPU: run `accuracy.py --techniques default --out ...` beside it).
Writes benchmarks/results/equalization.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402
import accuracy  # noqa: E402

from mixdeploy import runtimes  # noqa: E402

from mixdeploy.models.blocks import InvertedResidual  # noqa: E402
from mixdeploy.models.mixconv import MixConv2d  # noqa: E402

CHECKPOINTS = [ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt",
               ROOT / "benchmarks" / "weights" / "mixnet_m_fashion_mnist_224.pt",
               ROOT / "benchmarks" / "weights" / "tf_mixnet_m_fashion_mnist_224.pt"]
RESULTS = ROOT / "benchmarks" / "results"


def stream_segments(model) -> list[dict]:
    """Each residual stream of a MixNet: producers (BNs whose output is the stream, scaled with it),
    consumers (the convs reading it, scaled inversely) and taps (modules whose outputs are its
    tensors: the producers' and the residual ADDs', i.e. the skip blocks' outputs)."""
    segments = []
    current = {"producers": [model.bn1], "consumers": [], "taps": [model.bn1]}
    for block in (b for stage in model.blocks for b in stage):
        is_ir = isinstance(block, InvertedResidual)
        first, last = (block.conv_pw, block.bn3) if is_ir else (block.conv_dw, block.bn2)
        current["consumers"].append(first)
        if block.has_skip:
            current["producers"].append(last)
            current["taps"] += [last, block]
        else:
            segments.append(current)
            current = {"producers": [last], "consumers": [], "taps": [last]}
    current["consumers"].append(model.conv_head)
    segments.append(current)
    return segments


def input_pieces(conv) -> list[tuple[torch.nn.Conv2d, int, int, bool]]:
    """(conv, first input channel, channels, depthwise) for each conv reading a slice of the input."""
    if isinstance(conv, MixConv2d):
        starts = np.cumsum([0, *conv.splits[:-1]])
        return [(piece, int(s), n, conv.depthwise) for piece, s, n in zip(conv.values(), starts, conv.splits)]
    depthwise = conv.groups > 1
    if depthwise and conv.groups != conv.in_channels or not depthwise and conv.groups != 1:
        raise ValueError(f"grouped conv with {conv.groups} groups: not a MixNet stream consumer")
    return [(conv, 0, conv.in_channels, depthwise)]


def relative_column_max(conv) -> torch.Tensor:
    """Per input channel: its largest |weight| relative to its output row's largest (depthwise: 1)."""
    columns = []
    for piece, _, channels, depthwise in input_pieces(conv):
        w = piece.weight.detach().abs()
        if depthwise:
            columns.append(torch.ones(channels))
        else:
            per_column = w.flatten(2).amax(2) / w.flatten(1).amax(1).clamp_min(1e-12)[:, None]
            columns.append(per_column.amax(0))
    return torch.cat(columns)


def channel_ranges(model, segments, images: np.ndarray, batch: int = 16) -> list[torch.Tensor]:
    """Per segment and channel: the mean over images (and the segment's tensors) of per-image max |x|."""
    seen: dict[int, list[torch.Tensor]] = {}
    hooks = [tap.register_forward_hook(lambda _m, _i, out, k=k: seen.setdefault(k, []).append(
        out.detach().abs().amax((2, 3)))) for k, seg in enumerate(segments) for tap in seg["taps"]]
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(torch.from_numpy(images[start:start + batch]))
    finally:
        for hook in hooks:
            hook.remove()
    return [torch.cat(seen[k]).mean(0) for k in range(len(segments))]


def stream_scales(ranges: torch.Tensor, consumers, alpha: float, clip: float) -> torch.Tensor:
    columns = torch.stack([relative_column_max(c) for c in consumers]).amax(0).clamp_min(1e-6)
    scales = ranges.clamp_min(1e-6).pow(-alpha) * columns.pow(1 - alpha)
    scales = scales / scales.log().mean().exp()
    return scales.clamp(1 / clip, clip)


def equalize(model, images: np.ndarray, alpha: float = 1.0, clip: float = 4.0) -> list[torch.Tensor]:
    """Rescale every residual stream's channels in place (the function is unchanged); the scales."""
    segments = stream_segments(model)
    all_scales = []
    for seg, ranges in zip(segments, channel_ranges(model, segments, images)):
        scales = stream_scales(ranges, seg["consumers"], alpha, clip)
        with torch.no_grad():
            for bn in seg["producers"]:
                bn.weight.mul_(scales)
                bn.bias.mul_(scales)
            for conv in seg["consumers"]:
                for piece, start, channels, depthwise in input_pieces(conv):
                    part = scales[start:start + channels]
                    piece.weight.div_(part[:, None, None, None] if depthwise else part[None, :, None, None])
        all_scales.append(scales)
    return all_scales


def spread(ranges: torch.Tensor) -> float:
    return float(ranges.max() / ranges.median())


def baseline_runs(path: Path, checkpoint: Path, images: int, draws: int) -> list[dict] | None:
    """accuracy.py's `default` runs (64 images) of this checkpoint, on the same images and draws."""
    if not path.is_file():
        return None
    for entry in json.loads(path.read_text())["checkpoints"]:
        if entry["checkpoint"] == checkpoint.name and entry["images"] == images and entry["draws"] >= draws:
            rows = [r for r in entry["rows"] if r["technique"] == "default" and r["calibration_images"] == 64]
            return rows[0]["runs"][:draws] if rows else None
    return None


def run_checkpoint(checkpoint: Path, args) -> dict:
    import onnx

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    loaded = load_model(str(checkpoint))
    evaluation = accuracy_data.eval_set(loaded, args.images)      # reference: the original module
    original = {k: v.clone() for k, v in loaded.module.state_dict().items()}
    calibration = [accuracy_data.calibration_images(loaded.preprocessing, d, 64) for d in range(args.draws)]
    segments = stream_segments(loaded.module)
    before = [spread(r) for r in channel_ranges(loaded.module, segments, calibration[0])]
    entry = {"checkpoint": checkpoint.name, "model": loaded.name, "images": args.images, "draws": args.draws,
             "range_spread_before": before, "baseline": baseline_runs(args.baseline, checkpoint, args.images, args.draws),
             "rows": []}
    work = args.work / checkpoint.stem
    work.mkdir(parents=True, exist_ok=True)
    for alpha in args.alphas:
        loaded.module.load_state_dict(original)
        # the scales come from draw 0's images: the calibration set an export has
        equalize(loaded.module, calibration[0], alpha, args.clip)
        after = [spread(r) for r in channel_ranges(loaded.module, segments, calibration[0])]
        logits = runtimes.TorchRunner(loaded.module).run(evaluation.images[:100])
        change = float(np.abs(logits - evaluation.reference[:100]).max())
        exported = export_onnx(loaded.module, loaded.preprocessing.input_size, work / f"alpha{alpha}.onnx")
        rewritten = rewrite(onnx.load(str(exported.path)), lowering="auto", runtime="int8")
        runs = []
        for d, images in enumerate(calibration):
            runs.append(accuracy.measure(rewritten.model, "default", images, evaluation,
                                         work / f"alpha{alpha}_{d}.tflite"))
            accuracy.log(f"  {checkpoint.name} alpha {alpha} draw {d}: agreement "
                         f"{runs[-1]['top1_agreement'] * 100:.2f}% drop {runs[-1]['top1_drop_points']:+.2f}")
        entry["rows"].append({"alpha": alpha, "clip": args.clip, "max_logit_change_fp32": change,
                              "range_spread_after": after, "runs": runs,
                              "summary": accuracy_data.summarize(runs)})
    return entry


def per_draw(runs: list[dict], base: list[dict] | None) -> str:
    """Each draw's agreement %, with its change against the same draw of `base` when there is one."""
    return " / ".join(f"{r['top1_agreement'] * 100:.2f}" + (
        f" ({(r['top1_agreement'] - b['top1_agreement']) * 100:+.2f})" if base else "")
        for r, b in zip(runs, base or runs))


def render(document: dict) -> str:
    lines = ["# Residual-stream equalization before int8 (benchmarks/equalization.py)", "",
             "`default` recipe, `auto` lowering, draws of 64 calibration images; agreement with the original "
             "PyTorch fp32 model. Per draw: agreement % (change against `default` without equalization on "
             "the same draw). Range spread: max / median of a stream's channel ranges, over the streams.", ""]
    for entry in document["checkpoints"]:
        base = entry["baseline"]
        lines += [f"## {entry['checkpoint']} ({entry['model']}, {entry['images']} test images)", "",
                  f"range spread before: {min(entry['range_spread_before']):.1f} to "
                  f"{max(entry['range_spread_before']):.1f}", "",
                  "| alpha | mean agreement % | per draw | drop (points) | cosine | max fp32 logit change | spread after |",
                  "|---|---|---|---|---|---|---|"]
        if base:
            b = accuracy_data.summarize(base)
            lines.append(f"| none (`default`) | {b['top1_agreement']['mean'] * 100:.2f} | " + " / ".join(
                f"{r['top1_agreement'] * 100:.2f}" for r in base) +
                f" | {b['top1_drop_points']['mean']:.2f} | {b['mean_cosine']['mean']:.4f} | | |")
        for row in entry["rows"]:
            s, runs = row["summary"], row["runs"]
            lines.append(f"| {row['alpha']} | {s['top1_agreement']['mean'] * 100:.2f} | {per_draw(runs, base)} | "
                         f"{s['top1_drop_points']['mean']:.2f} | {s['mean_cosine']['mean']:.4f} | "
                         f"{row['max_logit_change_fp32']:.1e} | {min(row['range_spread_after']):.1f} to "
                         f"{max(row['range_spread_after']):.1f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", nargs="+", type=Path, default=CHECKPOINTS)
    ap.add_argument("--alphas", nargs="+", type=float, default=[1.0, 0.5])
    ap.add_argument("--clip", type=float, default=4.0)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-equalization"))
    ap.add_argument("--baseline", type=Path, default=RESULTS / "accuracy.json",
                    help="accuracy.py's results holding the `default` rows of the same draws")
    ap.add_argument("--out", type=Path, default=RESULTS / "equalization")
    args = ap.parse_args(argv)
    document = {"checkpoints": [run_checkpoint(c, args) for c in args.checkpoints]}
    accuracy_data.write_results(args.out, document, render)


if __name__ == "__main__":
    main()
