"""`mixdeploy tune`: each MixConv layer's lowering chosen on the device that runs it.

On a phone:
1. one whole-model variant per lowering (split, pad, decompose, pad_decompose), each built like
   the shipped model: `rewrite(model, lowering=...)`, then `convert_onnx` with the export's
   calibration and quantization recipe;
2. each variant runs on the phone under `benchmark_model --enable_op_profiling`; its op rows are
   matched to the model's ops and, by the ONNX node scopes their tensors carry, to the MixConv
   layers (bench/attribution.py), which gives each layer's time under each lowering;
3. per layer signature (layers of one shape lower alike) the fastest lowering wins (ties within
   5% go to the simpler one, as for `auto`);
4. that combination is built through `rewrite(..., lowering="auto")` with the choices in
   `policy.use_tuned` (the per-layer mechanism `auto` uses) and checked on the phone: its outputs
   against host LiteRT's on the same inputs, and the host's outputs against the `split`
   variant's (the lowerings compute the same function, so they must agree). A combination that
   fails gets its layers back to `split`, least gain first, until it passes;
5. `split`, the host's own `auto` and the tuned model are timed end to end, one after the other,
   without op profiling; the choices are saved under the phone's fingerprint (ro.product.model,
   ro.board.platform, benchmark_model sha256, precision, runtime) in ~/.cache/mixdeploy/tuned/,
   where `mixdeploy export --tuned-for DEVICE` finds them.

On the host (`--device host`) there is no op profiler in LiteRT's Python API: per-layer times are
the `auto` policy's single-layer measurements (same converter, host bench timer), and the
variants are timed whole, interleaved. The host tune file then records what `auto` picks here.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from mixdeploy.atomic import atomic_path, write_json_atomic
from mixdeploy.errors import MixdeployError
from mixdeploy.onnx import policy
from mixdeploy.onnx.lowering import LOWERINGS
from mixdeploy.pipeline import ExportOptions
from mixdeploy.preprocess import PreprocessingOverrides

Progress = Callable[[str, int, int], None]
TUNE_DIR = "tuned"
MIN_AGREEMENT = 0.98


@dataclass
class TuneOptions:
    source: str
    device: str = "host"                      # host, or a phone: serial / model substring / android
    precision: str = "int8"
    weights: str | None = None
    factory_kwargs: dict | None = None
    num_classes: int | None = None
    preprocessing: PreprocessingOverrides = field(default_factory=PreprocessingOverrides)
    calib: str | None = None
    calib_count: int = 64
    quant_recipe: str = "default"
    parity_data: str | None = None            # default: the calibration source's test split
    parity_count: int = 16
    min_agreement: float = MIN_AGREEMENT
    benchmark_binary: str | None = None
    adb_server: str | None = None
    threads: int | None = None
    runs: int = 20
    timeout_s: float = 600.0
    out_dir: Path | None = None               # keep the variants, the report and the chart here


@dataclass
class LayerChoice:
    name: str
    signature: str
    kernels: list[int]
    ms: dict[str, float]                      # candidate -> ms on the device (distinct candidates only)
    choice: str
    note: str = ""


@dataclass
class TuneResult:
    fingerprint: dict
    fingerprint_id: str
    timing: str                               # how per-layer times were measured
    layers: list[LayerChoice]
    end_to_end_ms: dict[str, float]           # split, host-auto, tuned (and each lowering on the host)
    parity: dict
    tune_file: str
    chart: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def gain_vs_split(self) -> float:
        return self.end_to_end_ms["split"] / self.end_to_end_ms["tuned"]

    @property
    def gain_vs_host_auto(self) -> float:
        return self.end_to_end_ms["host-auto"] / self.end_to_end_ms["tuned"]

    @property
    def choices(self) -> dict[str, str]:
        return {layer.name: layer.choice for layer in self.layers}

    def to_dict(self) -> dict:
        return {**asdict(self), "gain_vs_split": self.gain_vs_split, "gain_vs_host_auto": self.gain_vs_host_auto,
                "choices": self.choices}


@dataclass
class Variant:
    name: str
    path: Path
    applied: dict[str, str]                   # layer -> lowering the rewrite applied

    @property
    def choice_key(self) -> tuple:
        return tuple(sorted(self.applied.items()))


# ---------------------------------------------------------------- the model and its variants

class VariantBuilder:
    """The source ONNX once; each variant converted exactly as `mixdeploy export` would."""

    def __init__(self, options: TuneOptions, work: Path, progress: Progress, warn: Callable[[str], None]):
        from mixdeploy import pipeline
        from mixdeploy.models import load_model

        self.options, self.work, self.progress = options, work, progress
        export = ExportOptions(source=options.source, out_dir=work, weights=options.weights,
                               factory_kwargs=options.factory_kwargs, num_classes=options.num_classes,
                               preprocessing=options.preprocessing, precisions=(options.precision,),
                               calib=options.calib, calib_count=options.calib_count,
                               quant_recipe=options.quant_recipe, parity_data=options.parity_data)
        progress("load model", 0, 1)
        self.loaded = load_model(options.source, weights=options.weights, num_classes=options.num_classes,
                                 preprocessing=options.preprocessing, factory_kwargs=options.factory_kwargs)
        path, _ = pipeline.source_onnx(self.loaded, work / "model.onnx", export, warn)
        self.onnx = onnx.load(path)
        self.calibration = (pipeline.calibration_images(self.loaded, export, warn)
                            if options.precision == "int8" else None)
        self.built: dict[tuple, Variant] = {}

    def build(self, name: str, lowering: str, tuned: policy.TunedChoices | None = None) -> Variant:
        """`rewrite(lowering=...)` (with `tuned` active for "auto") then convert; an identical set
        of per-layer lowerings is converted once."""
        from mixdeploy.onnx.rewrite import rewrite
        from mixdeploy.tflite.convert import convert_onnx

        self.progress(f"build {name}", 0, 1)
        measuring = lambda done, total, layer: self.progress("auto: timing layers on the host", done, total)
        if tuned is not None:
            with policy.use_tuned(tuned):
                rewritten = rewrite(self.onnx, lowering=lowering, runtime=self.options.precision, progress=measuring)
        else:
            rewritten = rewrite(self.onnx, lowering=lowering, runtime=self.options.precision, progress=measuring)
        applied = rewritten.report.lowering_choices
        key = tuple(sorted(applied.items()))
        if key in self.built:
            return Variant(name, self.built[key].path, applied)
        path = self.work / f"variant_{re.sub(r'[^A-Za-z0-9_-]', '_', name)}.tflite"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert_onnx(rewritten.model, path, precision=self.options.precision, calibration=self.calibration,
                         recipe=self.options.quant_recipe)
        self.built[key] = Variant(name, path, applied)
        return self.built[key]

    def specs(self) -> list:
        from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec
        from mixdeploy.onnx.rewrite import rewrite

        report = rewrite(self.onnx, lowering="split").report
        return [MixConvSpec(**m) for m in report.mixconvs]

    def parity_images(self) -> np.ndarray:
        from mixdeploy import data

        source = self.options.parity_data or self.options.calib
        if source is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return data.default_calibration_images(self.loaded.preprocessing, self.options.parity_count, seed=1)
        return data.load_images(source, self.loaded.preprocessing, limit=self.options.parity_count,
                                split="test").images


def layer_scopes(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Each MixConv layer -> the TF name scopes of its ONNX nodes (split form: the Split, the group
    convs, the Concat; the lowerings name their new nodes after these)."""
    from mixdeploy.onnx.graph import to_ir
    from mixdeploy.onnx.passes.recognize_mixconv import find_mixconvs
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.graph import scope_name

    split = to_ir(rewrite(model, lowering="split").model)
    scopes = {}
    for match in find_mixconvs(split.graph):
        names = [match.name, match.split.name, match.concat.name, *(c.node.name for c in match.convs)]
        scopes[match.name] = sorted({scope_name(n, 0) for n in names if n})
    return scopes


# ---------------------------------------------------------------- choosing

def choose_per_signature(specs: list, per_layer_ms: dict[str, dict[str, float]]) -> dict[str, str]:
    """signature -> fastest lowering, the times of a signature's layers summed (candidates that
    every such layer has)."""
    by_signature: dict[str, list] = {}
    for spec in specs:
        by_signature.setdefault(spec.signature, []).append(spec.name)
    choices = {}
    for signature, names in by_signature.items():
        common = set.intersection(*(set(per_layer_ms[n]) for n in names))
        totals = {c: sum(per_layer_ms[n][c] for n in names) for c in LOWERINGS if c in common}
        choices[signature] = policy.pick_fastest(totals)
    return choices


def revert_until_parity(choices: dict[str, str], gains: dict[str, float],
                        holds: Callable[[dict[str, str]], bool]) -> tuple[dict[str, str], list[str]]:
    """Back to `split`, least gain first, until `holds(choices)`; returns (choices, reverted signatures)."""
    current, reverted = dict(choices), []
    while not holds(current):
        rest = [sig for sig, c in current.items() if c != "split"]
        if not rest:
            raise MixdeployError("even the all-split model fails the parity check on the device: check the "
                                 "model with `mixdeploy bench FILE --device ... --parity` first", exit_code=1)
        worst = min(rest, key=lambda sig: gains.get(sig, 0.0))
        current[worst] = "split"
        reverted.append(worst)
    return current, reverted


# ---------------------------------------------------------------- the device

@dataclass
class PhoneSession:
    """One phone, one benchmark_model: what each variant's run needs."""

    adb: object
    info: object
    binary: Path
    options: TuneOptions

    def run(self, path: Path, op_profile: bool = False, parity_inputs=None):
        from mixdeploy.bench.phone import RunOptions, bench_on_device

        return bench_on_device(self.adb, self.info, path, self.binary, RunOptions(
            threads=self.options.threads, op_profile=op_profile, parity_inputs=parity_inputs,
            runs=self.options.runs, warmup=min(5, self.options.runs), timeout_s=self.options.timeout_s))


def open_phone(options: TuneOptions) -> PhoneSession:
    from mixdeploy.bench.adb import Adb
    from mixdeploy.bench.phone import resolve_benchmark_binary

    if options.device == "all":
        raise MixdeployError("tune measures one phone at a time: give --device SERIAL or a model name")
    binary = resolve_benchmark_binary(options.benchmark_binary)
    adb = Adb(server=options.adb_server)
    [info] = adb.select(options.device)
    return PhoneSession(adb, info, binary, options)


def phone_fingerprint(session: PhoneSession, first_run) -> dict:
    from mixdeploy.manifest import sha256_file

    state = first_run.device
    return {"kind": "phone", "ro.product.model": state.model, "ro.board.platform": state.board_platform,
            "benchmark_model_sha256": sha256_file(session.binary), "precision": session.options.precision,
            "runtime": f"benchmark_model-{first_run.delegate}-{first_run.threads}t",
            "tuned_on": {"serial": state.serial, "server": first_run.server, "android": state.android_version,
                         "cpu_mask": first_run.cpu_mask}}


def host_fingerprint(precision: str) -> dict:
    from mixdeploy.bench.host import host_info

    host = host_info()
    return {"kind": "host", "ro.product.model": host["cpu"], "ro.board.platform": host["machine"],
            "benchmark_model_sha256": None, "precision": precision,
            "runtime": f"litert-{host['ai_edge_litert']}-xnnpack-1t"}


def fingerprint_id(fingerprint: dict) -> str:
    digest = (fingerprint.get("benchmark_model_sha256") or "host")[:12]
    parts = [fingerprint["ro.product.model"] or "unknown", fingerprint["ro.board.platform"] or "unknown",
             digest, fingerprint["precision"], fingerprint["runtime"]]
    return re.sub(r"[^a-z0-9.]+", "-", "-".join(parts).lower()).strip("-")


# ---------------------------------------------------------------- the run

def run_tune(options: TuneOptions, progress: Progress = lambda *a: None,
             warn: Callable[[str], None] = print) -> TuneResult:
    if options.precision not in policy.TIMED_PRECISIONS:
        raise MixdeployError(f"--precision {options.precision!r}: tune measures fp32 or int8")
    with tempfile.TemporaryDirectory(prefix="mixdeploy-tune-") as tmp:
        work = Path(options.out_dir) if options.out_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        session = open_phone(options) if options.device != "host" else None   # device faults before any work
        builder = VariantBuilder(options, work, progress, warn)
        specs = builder.specs()
        if not specs:
            raise MixdeployError(f"{options.source} has no MixConv layer (Split -> depthwise convs -> Concat): "
                                 "there is no lowering to tune")
        if session is None:
            result = _tune_on_host(builder, specs, progress)
        else:
            result = _tune_on_phone(builder, specs, session, progress)
        result.tune_file = str(save_tune_file(result, options, specs))
        if options.out_dir:
            result.chart = str(write_chart(result, work / "tune.png"))
            write_json_atomic(work / "tune.json", result.to_dict())
        return result


def _tune_on_phone(builder: VariantBuilder, specs: list, session: PhoneSession, progress: Progress) -> TuneResult:
    from mixdeploy.bench.attribution import LayerScopes, attribute, layer_times, model_ops

    scopes = LayerScopes(layer_scopes(builder.onnx))
    variants = [builder.build(lowering, lowering) for lowering in LOWERINGS]
    per_layer: dict[str, dict[str, float]] = {spec.name: {} for spec in specs}
    first_run, notes = None, []
    for i, variant in enumerate(variants):
        if variant.name != "split" and all(v == "split" for v in variant.applied.values()):
            continue        # e.g. pad where no layer's groups share a center: nothing new to time
        progress("op profile on the phone", i, len(variants))
        run = session.run(variant.path, op_profile=True)
        first_run = first_run or run
        times = layer_times(attribute(run.benchmark.op_profile, model_ops(variant.path)), scopes)
        for spec in specs:
            if variant.applied.get(spec.name) == variant.name and spec.name in times.ms:
                per_layer[spec.name][variant.name] = times.ms[spec.name]
        if times.unmatched_ms > 0.05 * times.total_ms:
            notes.append(f"{variant.name}: {times.unmatched_ms:.3f} of {times.total_ms:.3f} ms of op rows could "
                         f"not be placed in a layer")
    progress("op profile on the phone", len(variants), len(variants))
    missing = [name for name, ms in per_layer.items() if "split" not in ms]
    if missing:
        raise MixdeployError(f"the op profile named no op of layer(s) {', '.join(missing[:4])}: their ops were "
                             "not found by ONNX scope in the converted model; report the model", exit_code=1)
    choices = choose_per_signature(specs, per_layer)
    fingerprint = phone_fingerprint(session, first_run)
    images = builder.parity_images()
    split = next(v for v in variants if v.name == "split")
    checked: dict[str, object] = {}

    def holds(candidate: dict[str, str]) -> bool:
        tuned = builder.build("tuned", "auto", policy.TunedChoices(builder.options.precision, candidate))
        run = session.run(tuned.path, parity_inputs=images)
        agreement = host_agreement(split.path, tuned.path, images)
        checked.update(tuned=tuned, run=run, vs_split=agreement)
        return (run.parity.top1_agreement >= builder.options.min_agreement
                and agreement >= builder.options.min_agreement)

    gains = _gains(specs, per_layer, choices)
    progress("parity on the phone", 0, 1)
    final, reverted = revert_until_parity(choices, gains, holds)
    if reverted:
        notes.append(f"{len(reverted)} layer shape(s) back to split: the faster lowering failed the parity check")
    host_auto = builder.build("host-auto", "auto")
    progress("end to end on the phone", 0, 3)
    # the three back to back (not the parity run's timing, minutes earlier): the phone's thermal state alike
    e2e = {"split": session.run(split.path).median_ms, "host-auto": session.run(host_auto.path).median_ms,
           "tuned": session.run(checked["tuned"].path).median_ms}
    tuned_run = checked["run"]
    parity = {"inputs": len(images), "device_vs_host_top1": tuned_run.parity.top1_agreement,
              "device_vs_host_cosine_min": tuned_run.parity.cosine_min, "tuned_vs_split_top1": checked["vs_split"],
              "min_agreement": builder.options.min_agreement}
    return TuneResult(fingerprint=fingerprint, fingerprint_id=fingerprint_id(fingerprint),
                      timing="benchmark_model --enable_op_profiling on the phone, op rows attributed to layers",
                      layers=_layer_choices(specs, per_layer, final, reverted), end_to_end_ms=e2e, parity=parity,
                      tune_file="", notes=notes + [f"host auto chose: {_summary(host_auto.applied)}"])


def _tune_on_host(builder: VariantBuilder, specs: list, progress: Progress) -> TuneResult:
    from mixdeploy.bench.host import bench_models

    precision = builder.options.precision
    per_layer: dict[str, dict[str, float]] = {}
    measured: dict[str, dict[str, float]] = {}
    distinct = list({s.signature: s for s in specs}.values())
    for i, spec in enumerate(distinct):
        progress("single-layer candidates", i, len(distinct))
        measured[spec.signature] = policy.measure_layer(spec, precision)
    progress("single-layer candidates", len(distinct), len(distinct))
    for spec in specs:
        per_layer[spec.name] = measured[spec.signature]
    choices = choose_per_signature(specs, per_layer)
    split = builder.build("split", "split")
    tuned = builder.build("tuned", "auto", policy.TunedChoices(precision, choices))
    host_auto = builder.build("host-auto", "auto")
    images = builder.parity_images()
    agreement = host_agreement(split.path, tuned.path, images)
    if agreement < builder.options.min_agreement:
        raise MixdeployError(f"the tuned model agrees with the split one on {agreement:.1%} of top-1 only "
                             f"(< {builder.options.min_agreement:.0%}): export with --lowering split", exit_code=1)
    progress("end to end on the host", 0, 1)
    models = {"split": split.path, "host-auto": host_auto.path, "tuned": tuned.path}
    medians = bench_models(models, threads=(1,), runs=builder.options.runs, warmup=3)
    fingerprint = host_fingerprint(precision)
    return TuneResult(fingerprint=fingerprint, fingerprint_id=fingerprint_id(fingerprint),
                      timing="single-layer candidates (the auto policy's) timed on this host; whole models "
                             "interleaved (LiteRT's Python API has no op profiler)",
                      layers=_layer_choices(specs, per_layer, choices, []),
                      end_to_end_ms={k: v["1"] for k, v in medians.items()},
                      parity={"inputs": len(images), "tuned_vs_split_top1": agreement,
                              "min_agreement": builder.options.min_agreement},
                      tune_file="", notes=["on the host, tuned = what auto measures here (its cache aside)"])


def host_agreement(reference: Path, candidate: Path, images: np.ndarray) -> float:
    """Top-1 agreement of two TFLite models on the host (mixdeploy.parity.compare)."""
    from mixdeploy import parity, runtimes

    return parity.compare(runtimes.TfliteRunner(reference).run(images),
                          runtimes.TfliteRunner(candidate).run(images)).top1_agreement


def _gains(specs, per_layer, choices) -> dict[str, float]:
    gains: dict[str, float] = {}
    for spec in specs:
        ms = per_layer[spec.name]
        gains[spec.signature] = gains.get(spec.signature, 0.0) + ms["split"] - ms[choices[spec.signature]]
    return gains


def _layer_choices(specs, per_layer, choices, reverted) -> list[LayerChoice]:
    return [LayerChoice(spec.name, spec.signature, [k[0] for k in spec.kernels], per_layer[spec.name],
                        choices[spec.signature], "back to split: parity" if spec.signature in reverted else "")
            for spec in specs]


def _summary(applied: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for lowering in applied.values():
        counts[lowering] = counts.get(lowering, 0) + 1
    return ", ".join(f"{n} {lowering}" for lowering, n in sorted(counts.items()))


# ---------------------------------------------------------------- tune files

def tune_dir() -> Path:
    return policy.cache_root() / TUNE_DIR


def save_tune_file(result: TuneResult, options: TuneOptions, specs: list) -> Path:
    """Merge this run's choices into the device's file (other models' layers stay)."""
    path = tune_dir() / f"{result.fingerprint_id}.json"
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    choices = existing.get("choices", {})
    for layer in result.layers:
        choices[layer.signature] = {"choice": layer.choice, "ms": layer.ms, "layer": layer.name,
                                    "model": options.source}
    write_json_atomic(path, {"fingerprint": result.fingerprint, "choices": choices,
                             "measured": time.strftime("%Y-%m-%dT%H:%M:%S"), "timing": result.timing,
                             "end_to_end_ms": result.end_to_end_ms})
    return path


def read_tune_file(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise MixdeployError(f"{path} is not a tune file from `mixdeploy tune` ({err}): run tune again") from None
    if not (isinstance(data, dict) and isinstance(data.get("fingerprint"), dict)
            and isinstance(data.get("choices"), dict)):
        raise MixdeployError(f"{path} is not a tune file from `mixdeploy tune` (no fingerprint and choices): "
                             "run tune again")
    return data


def find_tune_file(selector: str, precision: str) -> Path:
    """The saved tuning for `selector` (a phone model substring, a serial, or `host`) and precision."""
    wanted = selector.lower()
    found = []
    for path in sorted(tune_dir().glob("*.json")) if tune_dir().is_dir() else []:
        try:
            fingerprint = read_tune_file(path)["fingerprint"]
        except MixdeployError:
            continue
        names = [fingerprint.get("kind", ""), fingerprint.get("ro.product.model") or "",
                 (fingerprint.get("tuned_on") or {}).get("serial") or ""]
        if fingerprint.get("precision") == precision and (
                wanted in names[1].lower() or wanted in (names[0], names[2].lower())):
            found.append(path)
    if not found:
        raise MixdeployError(f"no tuning for {selector!r} ({precision}) in {tune_dir()}: run `mixdeploy tune MODEL "
                             f"--device {selector} --precision {precision}` first, or pass --tune-file")
    if len(found) > 1:
        raise MixdeployError(f"{len(found)} tunings match {selector!r} ({precision}): pick one with --tune-file:\n"
                             + "\n".join(f"  {p}" for p in found))
    return found[0]


def load_tuned(selector: str | None, tune_file: str | None, precision: str) -> policy.TunedChoices:
    path = Path(tune_file) if tune_file else find_tune_file(selector, precision)
    data = read_tune_file(path)
    tuned_precision = data["fingerprint"].get("precision")
    if tuned_precision != precision:
        raise MixdeployError(f"{path} was tuned for {tuned_precision}, this export chooses lowerings for "
                             f"{precision}: tune with --precision {precision}")
    return policy.TunedChoices(precision, {sig: entry["choice"] for sig, entry in data["choices"].items()},
                               source=str(path))


def manifest_record(tuned: policy.TunedChoices) -> dict:
    """What `export --tuned-for` adds to the manifest: where the choices came from, which applied."""
    data = read_tune_file(tuned.source)
    return {"tune_file": tuned.source, "fingerprint": data["fingerprint"], "measured": data.get("measured"),
            "timing": data.get("timing"), "from_tune": dict(tuned.from_tune),
            "measured_here": list(tuned.measured_here)}


@contextlib.contextmanager
def tuned_export(tuned_for: str | None, tune_file: str | None, lowering: str, precisions):
    """`export --tuned-for / --tune-file`: auto's choices from a tune file for everything run inside
    (yields the TunedChoices, or None when neither is given)."""
    if not (tuned_for or tune_file):
        yield None
        return
    if lowering != "auto":
        raise MixdeployError(f"--tuned-for/--tune-file choose the lowering per layer: drop --lowering {lowering}")
    with policy.use_tuned(load_tuned(tuned_for, tune_file, policy.auto_runtime(precisions))) as tuned:
        yield tuned


# ---------------------------------------------------------------- the chart

def write_chart(result: TuneResult, path: Path) -> Path:
    """PNG: each layer's time under each lowering (the chosen one outlined), and end to end."""
    from mixdeploy.report.style import FIGURE_WIDTH_IN, SMALL_FONT, pyplot, series_styles

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(FIGURE_WIDTH_IN * 1.6, 6.5),
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    names = [layer.name.replace(".conv_dw", "") for layer in result.layers]
    width = 0.8 / len(LOWERINGS)
    for i, (lowering, (colour, _, hatch)) in enumerate(zip(LOWERINGS, series_styles())):
        xs, ys, chosen = [], [], []
        for x, layer in enumerate(result.layers):
            if lowering in layer.ms:
                xs.append(x + (i - (len(LOWERINGS) - 1) / 2) * width)
                ys.append(layer.ms[lowering])
                chosen.append(layer.choice == lowering)
        bars = top.bar(xs, ys, width, label=lowering, color=colour, hatch=hatch, edgecolor="white", linewidth=0.5)
        for bar, is_chosen in zip(bars, chosen):
            if is_chosen:
                bar.set_edgecolor("black")
                bar.set_linewidth(1.5)
    top.set_yscale("log")
    top.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=SMALL_FONT)
    top.set_ylabel("layer time (ms, log)")
    top.set_title(f"per MixConv layer on {result.fingerprint['ro.product.model']} "
                  f"({result.fingerprint['precision']}); chosen lowering outlined", fontsize=10)
    top.legend(fontsize=SMALL_FONT, ncol=len(LOWERINGS))
    top.grid(axis="y", alpha=0.3)
    labels = list(result.end_to_end_ms)
    values = [result.end_to_end_ms[k] for k in labels]
    styles = [style for _, style in zip(labels, series_styles())]
    bars = bottom.barh(labels[::-1], values[::-1], color=[s[0] for s in styles][::-1],
                       hatch=[s[2] for s in styles][::-1], edgecolor="white")
    for bar, value in zip(bars, values[::-1]):
        bottom.annotate(f"{value:.3g} ms", (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=SMALL_FONT)
    bottom.set_xlabel(f"end to end, median ms (tuned: {result.gain_vs_split:.2f}x vs split, "
                      f"{result.gain_vs_host_auto:.2f}x vs host auto)")
    bottom.margins(x=0.2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path

