"""Quantization-aware fine-tuning, distilled from the float model: does it move int8 agreement?

    python benchmarks/qat_distill.py --steps 200 --lr 5e-6 --loss kl
    python benchmarks/qat_distill.py --checkpoint a.pt --steps 50 --images 500 --draws 1

mixdeploy quantizes after training. This measures the lever every post-training rule measured
so far points to: fine-tune the float weights while the forward pass simulates TFLite's int8,
with the original fp32 model as the teacher (so the student learns to keep the teacher's answers,
which is what agreement counts), then export the student with the normal `default` recipe and
compare it with the *original* model on accuracy.py's images and calibration draws.

The simulation (fake quantization, straight-through gradients) follows the int8 graph mixdeploy
writes: weights symmetric per output channel; one asymmetric int8 scale per activation tensor
(the input, every BN output, i.e. each MixConv's concatenated output, a swish's input and product,
the SE's mean, reduce, expand and gated product, each residual ADD, the pooled features and the
logits), ranges from the calibration images by the default's trimmed-midminmax rule (halfway
between the mean per-image extreme and the eighth-most-extreme image) on every tensor, also the
channel vectors (SE, pooled, logits) to which the `default` recipe gives their min/max: a
simplification of the simulation, not what the export does; re-measured halfway and at the end; sigmoid
outputs on TFLite's fixed 1/256 scale. Not simulated: the partial sums of decomposed large kernels
(`auto` writes those as pieces + ADD). BN statistics stay frozen (eval mode). Train images come
from Fashion-MNIST's train split at random (with flips); no test image is used for training.
Writes benchmarks/results/qat_distill.{json,md}; a run adds its configuration's row.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _accuracy_data as accuracy_data  # noqa: E402
import accuracy  # noqa: E402

from mixdeploy import data, runtimes  # noqa: E402
from mixdeploy.models.blocks import BatchNormAct2d, DepthwiseSeparable, InvertedResidual, SqueezeExcite  # noqa: E402
from mixdeploy.models.mixconv import Conv2dSame, same_padding_amount  # noqa: E402
from mixdeploy.tflite.calibrate import TRIM_FRACTION  # noqa: E402  (the default range rule's trim)

RESULTS = ROOT / "benchmarks" / "results"
CHECKPOINT = ROOT / "mixdeploy" / "weights" / "mixnet_s_fashion_mnist_224.pt"


class Int8Simulation:
    """Where the module's patched forwards ask to quantize: off (float), observing ranges, or quantizing."""

    def __init__(self):
        self.mode = "off"
        self.seen: dict[str, list[torch.Tensor]] = {}
        self.ranges: dict[str, tuple[float, float]] = {}

    def act(self, key: str, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            flat = x.detach().flatten(1)
            self.seen.setdefault(key, []).append(torch.stack([flat.amin(1), flat.amax(1)], 1))
        if self.mode != "quantize":
            return x
        low, high = self.ranges[key]
        scale = max((high - low) / 255.0, 1e-8)
        zero_point = min(127, max(-128, round(-low / scale) - 128))
        return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, -128, 127)

    def sigmoid(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(x)
        if self.mode != "quantize":
            return y
        return torch.fake_quantize_per_tensor_affine(y, 1 / 256, -128, -128, 127)   # TFLite's LOGISTIC output

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.mode != "quantize":
            return w
        scale = (w.detach().abs().flatten(1).amax(1).clamp_min(1e-8) / 127).float()
        return torch.fake_quantize_per_channel_affine(w, scale, torch.zeros_like(scale, dtype=torch.int32), 0, -127, 127)

    def finish_observing(self) -> None:
        for key, chunks in self.seen.items():
            extremes = torch.cat(chunks)
            k = max(1, int(len(extremes) * TRIM_FRACTION))
            lows, highs = extremes[:, 0].sort().values, extremes[:, 1].sort(descending=True).values
            low = 0.5 * float(lows.mean() + lows[k - 1])
            high = 0.5 * float(highs.mean() + highs[k - 1])
            self.ranges[key] = (min(low, 0.0), max(high, 0.0))
        self.seen = {}
        self.mode = "quantize"


def instrument(model: nn.Module, sim: Int8Simulation) -> None:
    """Patch each module's forward (per instance) to quantize where the int8 graph does."""
    names = {id(m): n for n, m in model.named_modules()}

    def activation(key, act, y):
        if isinstance(act, nn.ReLU):
            return sim.act(key + ".relu", F.relu(y))          # fused into the producer in TFLite
        if isinstance(act, nn.SiLU):
            y = sim.act(key + ".pre", y)
            return sim.act(key + ".swish", y * sim.sigmoid(y))
        return sim.act(key + ".out", y)

    def conv(self, x):
        if isinstance(self, Conv2dSame):
            pad_h = same_padding_amount(x.shape[-2], self.kernel_size[0], self.stride[0], self.dilation[0])
            pad_w = same_padding_amount(x.shape[-1], self.kernel_size[1], self.stride[1], self.dilation[1])
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, sim.weight(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups)

    def bn_act(self, x):
        return activation(names[id(self)], self.act, nn.BatchNorm2d.forward(self, x))

    def squeeze_excite(self, x):
        key = names[id(self)]
        pooled = sim.act(key + ".mean", x.mean((2, 3), keepdim=True))
        reduced = activation(key + ".reduce", self.act1, self.conv_reduce(pooled))
        gate = sim.sigmoid(sim.act(key + ".expand", self.conv_expand(reduced)))
        return sim.act(key + ".gated", x * gate)

    def inverted_residual(self, x):
        y = self.bn3(self.conv_pwl(self.se(self.bn2(self.conv_dw(self.bn1(self.conv_pw(x)))))))
        return sim.act(names[id(self)] + ".add", y + x) if self.has_skip else y

    def depthwise_separable(self, x):
        y = self.bn2(self.conv_pw(self.se(self.bn1(self.conv_dw(x)))))
        return sim.act(names[id(self)] + ".add", y + x) if self.has_skip else y

    def network(self, x):
        features = self.forward_features(sim.act("input", x))
        pooled = sim.act("pool", self.global_pool(features))
        weight = sim.weight(self.classifier.weight[:, :, None, None])[:, :, 0, 0]
        return sim.act("logits", F.linear(pooled, weight, self.classifier.bias))

    forwards = [(BatchNormAct2d, bn_act), (SqueezeExcite, squeeze_excite), (InvertedResidual, inverted_residual),
                (DepthwiseSeparable, depthwise_separable), (nn.Conv2d, conv)]
    for module in model.modules():
        for kind, forward in forwards:
            if isinstance(module, kind):
                module.forward = forward.__get__(module)
                break
    model.forward = network.__get__(model)


def observe(model, sim: Int8Simulation, images: np.ndarray, batch: int = 16) -> None:
    sim.mode = "observe"
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(torch.from_numpy(images[start:start + batch]))
    sim.finish_observing()


def agreement_with(reference: np.ndarray, model, images: np.ndarray) -> float:
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(images[s:s + 50])) for s in range(0, len(images), 50)]).numpy()
    return float((logits.argmax(1) == reference[:len(images)].argmax(1)).mean())


def distill(student, teacher, sim, loaded, calibration, args) -> list[float]:
    """Adam on every float parameter, cosine schedule; loss against the teacher's logits. Losses."""
    raw, _ = data.load_fashion_mnist_raw("train")
    rng = np.random.default_rng(args.seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    losses, started = [], time.perf_counter()
    for step in range(args.steps):
        images = torch.from_numpy(data.preprocess_arrays(raw[rng.choice(len(raw), args.batch, replace=False)],
                                                         loaded.preprocessing))
        if rng.random() < 0.5:
            images = images.flip(3)
        with torch.no_grad():
            target = teacher(images)
        logits = student(images)
        if args.loss == "kl":
            loss = F.kl_div(F.log_softmax(logits, 1), F.log_softmax(target, 1), log_target=True, reduction="batchmean")
        else:
            loss = F.mse_loss(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / args.steps))
        losses.append(loss.item())
        if step % 20 == 0 or step == args.steps - 1:
            accuracy.log(f"  step {step}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)")
        if step == args.steps // 2:
            observe(student, sim, calibration)
    observe(student, sim, calibration)
    return losses


def run(args) -> dict:
    import onnx

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite

    torch.manual_seed(args.seed)
    loaded = load_model(str(args.checkpoint))
    teacher = loaded.module.eval()
    evaluation = accuracy_data.eval_set(loaded, args.images)
    draws = [accuracy_data.calibration_images(loaded.preprocessing, d, 64) for d in range(args.draws)]
    student, sim = copy.deepcopy(teacher).eval(), Int8Simulation()
    instrument(student, sim)
    observe(student, sim, draws[0])
    probe = evaluation.images[:500]
    simulated_before = agreement_with(evaluation.reference, student, probe)
    started = time.perf_counter()
    losses = distill(student, teacher, sim, loaded, draws[0], args)
    train_seconds = time.perf_counter() - started
    simulated_after = agreement_with(evaluation.reference, student, probe)
    tuned = copy.deepcopy(teacher)
    tuned.load_state_dict(student.state_dict())       # the weights, without the simulation
    float_logits = runtimes.TorchRunner(tuned).run(evaluation.images)
    work = args.work / args.checkpoint.stem
    work.mkdir(parents=True, exist_ok=True)
    exported = export_onnx(tuned, loaded.preprocessing.input_size, work / "student.onnx")
    rewritten = rewrite(onnx.load(str(exported.path)), lowering="auto", runtime="int8")
    runs = []
    for d, images in enumerate(draws):
        runs.append(accuracy.measure(rewritten.model, "default", images, evaluation, work / f"student_{d}.tflite"))
        accuracy.log(f"  draw {d}: agreement {runs[-1]['top1_agreement'] * 100:.2f}%")
    return {"checkpoint": args.checkpoint.name, "model": loaded.name, "images": args.images, "draws": args.draws,
            "steps": args.steps, "batch": args.batch, "lr": args.lr, "loss": args.loss, "seed": args.seed,
            "train_seconds": train_seconds, "first_loss": losses[0], "last_loss": float(np.mean(losses[-10:])),
            "simulated_agreement": {"images": len(probe), "before": simulated_before, "after": simulated_after},
            "student_fp32": {"agreement": float((float_logits.argmax(1) == evaluation.reference.argmax(1)).mean()),
                             "top1": float((float_logits.argmax(1) == evaluation.labels).mean()),
                             "teacher_top1": float((evaluation.reference.argmax(1) == evaluation.labels).mean())},
            "runs": runs, "summary": accuracy_data.summarize(runs)}


def render(rows: list[dict]) -> str:
    lines = ["# Distilled quantization-aware fine-tuning (benchmarks/qat_distill.py)", "",
             "The student's int8 (`default` recipe, draws of 64) against the *original* fp32 model; "
             "simulated: the fake-quantized student on the first 500 test images (fewer when fewer are evaluated), before / after training.", "",
             "| checkpoint | steps x batch | lr | loss | train s | int8 agreement % (draws) | drop | cosine | "
             "student fp32 agreement % | simulated before / after % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        per_draw = " / ".join(f"{x['top1_agreement'] * 100:.2f}" for x in r["runs"])
        lines.append(
            f"| {r['checkpoint']} | {r['steps']} x {r['batch']} | {r['lr']:g} | {r['loss']} | {r['train_seconds']:.0f} | "
            f"{s['top1_agreement']['mean'] * 100:.2f} ({per_draw}) | "
            f"{s['top1_drop_points']['mean']:.2f} | {s['mean_cosine']['mean']:.4f} | "
            f"{r['student_fp32']['agreement'] * 100:.2f} | {r['simulated_agreement']['before'] * 100:.2f} / "
            f"{r['simulated_agreement']['after'] * 100:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-6)
    ap.add_argument("--loss", choices=("kl", "mse"), default="kl")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mixdeploy-qat"))
    ap.add_argument("--out", type=Path, default=RESULTS / "qat_distill")
    args = ap.parse_args(argv)
    row = run(args)
    results = args.out.with_suffix(".json")
    rows = json.loads(results.read_text())["rows"] if results.is_file() else []
    config = ("checkpoint", "steps", "batch", "lr", "loss", "seed", "images", "draws")
    rows = [r for r in rows if any(r[k] != row[k] for k in config)] + [row]
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    text = render(rows)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
