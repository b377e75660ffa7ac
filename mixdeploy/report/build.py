"""From what the commands wrote (mixdeploy.report.inputs) to the report's sections (content).

One function per section. A section whose inputs are missing says so in a Note, with the
command that would fill it; nothing here fails for a missing piece.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from pathlib import Path

from mixdeploy.bench.report import MAC_BUDGET, LatencyRow, lowering_for
from mixdeploy.errors import MixdeployError
from mixdeploy.report import plots
from mixdeploy.report.baseline import Tolerances, compare_inputs
from mixdeploy.report.content import Heading, Note, Paragraph, Plot, Report, Section, Table, num, txt
from mixdeploy.views import dash_or
from mixdeploy.report.inputs import Document, Export, Inputs

TOP_OPS = 20          # op-profile bars
TOP_BLAME = 15        # blame bars
TOP_FLIPS = 12        # flip-pair bars
SLOW_DEPTHWISE_TAPS = 25   # XNNPACK's depthwise fast path ends at 25 taps (5x5); larger runs as IGEMM


# ------------------------------------------------------------------ formatting

def pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.2f}%"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def megabytes(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:.2f} MB"


def _from_dict(cls, data: dict, source: Document):
    """A dataclass from a JSON object, ignoring keys newer versions added; missing keys are an error."""
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as err:
        raise MixdeployError(f"{source.path}: a {source.kind} entry lacks fields ({err}); "
                             f"write it again with this mixdeploy") from None


# ------------------------------------------------------------------ the whole report

def build_report(inputs: Inputs, baseline: Inputs | None = None, tolerances: Tolerances | None = None,
                 baseline_name: str | None = None, version: str | None = None) -> Report:
    if inputs.empty:
        raise MixdeployError("nothing to report: the inputs hold no manifest.json, bench or parity JSON; "
                             "give export folders (`mixdeploy export -o DIR`) or the output of "
                             "`mixdeploy bench --json` / `mixdeploy parity --json`")
    tolerances = tolerances or Tolerances()
    rows = latency_rows(inputs)
    sections = [latency_section(rows), op_profile_section(inputs), parity_section(inputs),
                blame_section(inputs), graph_section(inputs)]
    changes = None
    if baseline is not None:
        changes = compare_inputs(inputs, baseline, tolerances, rows, latency_rows(baseline))
        sections.append(baseline_section(changes, baseline_name or "baseline", tolerances))
    sections.insert(0, summary_section(inputs, rows, changes))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # blame travels inside parity.json too (the blame.json beside it was dropped as its copy)
    blames = len(inputs.blame) + sum(1 for p in inputs.parity if isinstance(p.data.get("blame"), dict))
    counts = (f"{len(inputs.exports)} export(s), {len(inputs.bench)} bench result(s), "
              f"{len(inputs.parity)} parity result(s), {blames} blame result(s)")
    facts = [counts,
             *(["baseline: " + baseline_name] if baseline is not None else []),
             f"made by mixdeploy {version or ''} on {when}".replace("  ", " ")]
    models = sorted({e.model_name for e in inputs.exports} | {p.data.get("model", "?") for p in inputs.parity})
    title = "mixdeploy report" + (f": {', '.join(models)}" if models else "")
    return Report(title=title, facts=facts, sections=sections)


def summary_section(inputs: Inputs, rows: list[LatencyRow], changes) -> Section:
    section = Section("summary", "Summary")
    for doc in inputs.parity:
        data = doc.data
        worst = min(data["backends"], key=lambda b: b.get("top1_agreement", 1.0), default=None)
        verdict = "PASS" if data.get("passed") else "FAIL"
        text = f"Parity {data.get('model')}: {verdict} on {data.get('images')} images"
        if worst:
            text += f"; lowest top-1 agreement {pct(worst.get('top1_agreement'))} ({worst['backend']})"
        section.add(Paragraph(text))
    for row in sorted(rows, key=lambda r: r.median_ms)[:1]:
        section.add(Paragraph(f"Fastest: {row.label} on {row.target} ({row.config}), {ms(row.median_ms)} ms "
                              f"median" + (f", {row.macs / 1e6:.1f}M MACs" if row.macs else "")))
    if changes is not None:
        flagged = [c for c in changes.rows if c.flagged]
        section.add(Paragraph(f"Against the baseline: {len(flagged)} change(s) beyond tolerance "
                              f"({sum(c.worse for c in flagged)} worse, {sum(not c.worse for c in flagged)} better)."))
    section.add(*(Note(n) for n in inputs.notes))
    return section


# ------------------------------------------------------------------ latency vs MACs

def _export_beside(inputs: Inputs, path: str) -> Export | None:
    folder = Path(path).parent.resolve()
    return next((e for e in inputs.exports if e.folder.resolve() == folder), None)


def latency_rows(inputs: Inputs) -> list[LatencyRow]:
    """The bench JSON's table rows; MACs and lowering from the export beside each file when missing."""
    rows = []
    for doc in inputs.bench:
        for entry in doc.data["table"]:
            row = _from_dict(LatencyRow, entry, doc)
            export = _export_beside(inputs, row.path)
            if export is not None:
                model = export.manifest.get("model") or {}
                row.macs = row.macs or model.get("macs")
                row.lowering = row.lowering or ((export.manifest.get("stages") or {}).get("rewrite") or {}).get("lowering")
            row.lowering = row.lowering or lowering_for(row.path)
            rows.append(row)
    return rows


def latency_key(row: LatencyRow) -> str:
    return f"latency:{row.label}:{row.target}:{row.config}"


def latency_section(rows: list[LatencyRow]) -> Section:
    section = Section("latency", "Latency against MACs")
    if not rows:
        return section.add(Note("No bench results: run `mixdeploy bench FILE.tflite --device host|pixel --json "
                                "> bench.json` and give bench.json."))
    if any(r.macs for r in rows):
        section.add(Plot("latency-vs-macs", "Median latency against MACs",
                         f"Median latency in ms against MACs for {len(rows)} runs, with the "
                         f"{MAC_BUDGET / 1e6:.0f}M-MAC mobile budget as a dashed line", plots.latency_vs_macs(rows)))
    else:
        section.add(Note("No MACs known for these files (no manifest.json beside them): the plot needs "
                         "files written by `mixdeploy export`."))
    table_rows = []
    for row in rows:
        budget = {None: txt("?"), True: txt("within"), False: txt("over", flag="worse")}[row.within_budget]
        table_rows.append([txt(row.label), txt(row.target), txt(row.config), txt(row.lowering or "-"),
                           num(f"{row.macs / 1e6:.1f}M" if row.macs else "-"), budget,
                           num(ms(row.median_ms), key=latency_key(row)), num(ms(row.tail_ms)),
                           num(dash_or(row.ms_per_gmac, ".2f"))])
    return section.add(Table(f"Latency (MAC budget {MAC_BUDGET / 1e6:.0f}M)",
                             ["model", "target", "config", "lowering", "MACs", "budget", "median ms",
                              "p90/p95 ms", "ms/GMAC"], table_rows))


# ------------------------------------------------------------------ op profiles

def _op_profiles(inputs: Inputs):
    """(title, profile rows, slow-depthwise entries) per bench result that carries an op profile."""
    for doc in inputs.bench:
        for result in doc.data["results"]:
            profile = (result.get("benchmark") or {}).get("op_profile") or result.get("op_profile") or []
            if profile:
                device = result.get("device") or {}
                where = device.get("model") or device.get("serial") or "host"
                yield f"{Path(result.get('model_path', '?')).name} on {where}", profile, result.get("slow_depthwise") or []


def _short_op_name(name: str) -> str:
    from mixdeploy.bench.phone import mixnet_layer_name

    layer = mixnet_layer_name(name)
    if layer:
        return layer
    bare = name.strip().rsplit(":", 1)[0].strip("[]").split(";")[-1]
    return bare if len(bare) <= 40 else "..." + bare[-37:]


def _short_node_type(node_type: str) -> str:
    """`Convolution (NHWC, QS8) IGEMM` -> `conv QS8 IGEMM`: the plot's labels must stay short."""
    return re.sub(r"Convolution \(NHWC, (\w+)\) ?", r"conv \1 ", node_type)[:24].strip()


def _slow_entry(row: dict, slow: list[dict]) -> dict | None:
    """The slow-depthwise entry of this profile row: by the row it was matched to, or (results
    written before `profile_row` existed) by its tensor name inside the row's name."""
    name = row.get("name", "")
    return next((s for s in slow if (s.get("profile_row") and s["profile_row"] == name)
                 or (not s.get("profile_row") and s.get("name") and s["name"] in name)), None)


def op_profile_section(inputs: Inputs) -> Section:
    section = Section("op-profile", "Where the time goes (per-layer latency)")
    profiles = list(_op_profiles(inputs))
    if not profiles:
        return section.add(Note("No op profile in the bench results: phone runs with `mixdeploy bench FILE "
                                "--device pixel --op-profile --json` carry one."))
    for i, (title, profile, slow) in enumerate(profiles):
        ranked = sorted(profile, key=lambda r: -r["avg_ms"])
        # the slowest ops, and every slow-path depthwise conv even when it is not among them
        top = [r for n, r in enumerate(ranked) if n < TOP_OPS or _slow_entry(r, slow)]
        marks = [_slow_entry(r, slow) for r in top]
        labels = [f"{_short_op_name(r['name'])} · {_short_node_type(r['node_type'])}" for r in top]
        section.add(Heading(title), Plot(
            f"op-profile-{i}", f"Slowest ops: {title}",
            f"Average ms of the {len(top)} slowest ops of {title}; depthwise convs off XNNPACK's fast path "
            f"are hatched and labelled 'slow path'",
            plots.flagged_bars(labels, [r["avg_ms"] for r in top], [m is not None for m in marks],
                               "average ms per run", "slow path", "{:.3f}")))
        section.add(Table(f"Slowest ops: {title}", ["op", "node type", "avg ms", "%", "depthwise path"], [
            [txt(_short_op_name(r["name"])), txt(r["node_type"]), num(f"{r['avg_ms']:.3f}"),
             num(dash_or(r.get("percent"), ".1f")),
             txt(_slow_text(m), flag="slow") if m else txt("")] for r, m in zip(top, marks)]))
        if not slow:
            section.add(Paragraph("No depthwise conv of this model ran off XNNPACK's fast path."))
    return section


def _slow_text(entry: dict) -> str:
    """What the bench measured: this depthwise conv ran on the generic path (its node type says so)."""
    kernel = entry.get("kernel") or [0, 0]
    return f"slow path: {kernel[0]}x{kernel[1]} ({kernel[0] * kernel[1]} taps) ran as {entry.get('node_type', '?')}"


# ------------------------------------------------------------------ parity

def agreement_key(model: str, backend: str) -> str:
    return f"agreement:{model}:{backend}"


def parity_section(inputs: Inputs) -> Section:
    section = Section("parity", "Accuracy parity against PyTorch")
    if not inputs.parity:
        section.add(Note("No parity result: run `mixdeploy parity MODEL --tflite FILE --data SRC --json > "
                         "parity.json` (or `--report DIR`) and give it."))
        for export in inputs.exports:
            section.add(*_export_quick_parity(export))
        return section
    for i, doc in enumerate(inputs.parity):
        section.add(*_parity_blocks(doc.data, i))
    return section


def _parity_blocks(data: dict, index: int) -> list:
    model = str(data.get("model", "?"))
    failed = {(c["backend"], c["threshold"]) for c in data.get("violations", [])}
    blocks = [Heading(f"{model} on {data.get('data')}: {'PASS' if data.get('passed') else 'FAIL'}")]
    rows = []
    for b in [data["reference"], *data["backends"]]:
        reference = b is data["reference"]
        own = sorted(t for backend, t in failed if backend == b["backend"])
        status = txt("reference") if reference else (txt("FAIL: " + ", ".join(own), flag="worse") if own else txt("pass"))
        rows.append([txt(b["backend"]), num(pct(b.get("top1"))), num(pct(b.get("top5"))),
                     num(dash_or(b.get("top1_drop_points"), "+.2f")),
                     num(pct(b.get("top1_agreement")), key=None if reference else agreement_key(model, b["backend"])),
                     num(dash_or(b.get("mean_cosine"), ".5f")), num(dash_or(b.get("max_abs_error"), ".4g")),
                     num(dash_or(b.get("sqnr_db"), ".1f")), num(megabytes(b.get("file_size"))), status])
    blocks.append(Table(f"Parity: {model}", ["backend", "top-1", "top-5", "drop (pts)", "agreement", "cosine",
                                             "max |err|", "SQNR dB", "size", "status"], rows))
    blocks += [Paragraph(f"Violation: {v['backend']}: {v['message']}") for v in data.get("violations", [])]
    blocks += _class_delta_blocks(data["backends"], f"class-deltas-{index}", model)
    blocks += _flip_blocks(data["backends"], f"flips-{index}", model)
    return blocks


def _class_delta_blocks(backends: list[dict], name: str, model: str) -> list:
    changed = {b["backend"]: b["per_class_delta_points"] for b in backends
               if b.get("per_class_delta_points") and any(b["per_class_delta_points"].values())}
    if not backends or all(b.get("per_class_delta_points") is None for b in backends):
        return [Note("No per-class accuracy: the parity data had no labels.")]
    if not changed:
        return [Paragraph("Per-class accuracy: no class changed against PyTorch.")]
    classes = list(next(iter(changed.values())))
    return [Plot(name, f"Per-class top-1 change against PyTorch: {model}",
                 "Per-class top-1 accuracy change in points against PyTorch, one hatched bar per backend",
                 plots.grouped_bars(classes, {b: [d.get(c, 0.0) for c in classes] for b, d in changed.items()},
                                    "accuracy change (points)"))]


def _flip_blocks(backends: list[dict], name: str, model: str) -> list:
    if any(b.get("flips") is None for b in backends):
        return [Note("This parity JSON has no `flips` (it predates them): run `mixdeploy parity` again to see "
                     "which classes each backend confuses.")]
    blocks = []
    for i, b in enumerate(backends):
        flips = b["flips"]
        if not flips:
            continue
        top = flips[:TOP_FLIPS]
        labels = [f"{f['reference']} → {f['candidate']}" for f in top]
        blocks.append(Plot(f"{name}-{i}", f"Top-1 flips of {b['backend']} ({model})",
                           f"How many images PyTorch put in one class and {b['backend']} in another, per pair",
                           plots.flagged_bars(labels, [f["count"] for f in top], [False] * len(top),
                                              "images", "", "{:.0f}")))
        images = b.get("images") or 0
        blocks.append(Table(f"Flips: {b['backend']}", ["PyTorch class", f"{b['backend']} class", "images", "share"],
                            [[txt(f["reference"]), txt(f["candidate"]),
                              num(str(f["count"]), key=f"flips:{model}:{b['backend']}:{f['reference']}->{f['candidate']}"),
                              num(pct(f["count"] / images) if images else "-")] for f in top]))
    return blocks


def _export_quick_parity(export: Export) -> list:
    quick = export.manifest.get("parity") or {}
    if not quick.get("backends"):
        return []
    rows = [[txt(name), num(pct(b.get("top1"))), num(pct(b.get("top1_agreement"))),
             num(dash_or(b.get("mean_cosine"), ".5f")), num(dash_or(b.get("sqnr_db"), ".1f"))]
            for name, b in quick["backends"].items()]
    return [Heading(f"{export.label}: the export's own check ({quick.get('images')} images of {quick.get('data')})"),
            Table(f"Export parity: {export.label}", ["file", "top-1", "agreement", "cosine", "SQNR dB"], rows)]


# ------------------------------------------------------------------ blame

def _blames(inputs: Inputs) -> list[dict]:
    found = [p.data["blame"] for p in inputs.parity if isinstance(p.data.get("blame"), dict)]
    return found + [b.data for b in inputs.blame]


def blame_section(inputs: Inputs) -> Section:
    section = Section("blame", "int8 blame: which layers lose accuracy")
    blames = [b for b in _blames(inputs) if b.get("layers")]
    if not blames:
        return section.add(Note("No blame: `mixdeploy parity` ranks int8 layers when an int8 model misses a "
                                "threshold (or with `--keep-float auto`); give its JSON or --report folder."))
    for i, blame in enumerate(blames):
        ideal = float(blame.get("ideal_rmse_over_scale") or 0.2887)
        layers = blame["layers"][:TOP_BLAME]
        labels = [f"{', '.join(layer.get('onnx_nodes') or []) or layer['tensor'][:40]} · {layer['op']}" for layer in layers]
        values = [layer["rmse_over_scale"] for layer in layers]
        name = Path(str(blame.get("tflite", "int8 model"))).name
        section.add(Heading(f"{name} ({blame.get('debug_images')} debug images)"), Plot(
            f"blame-{i}", f"Per-layer int8 error: {name}",
            "RMSE over quantization scale per layer, worst first; layers over twice pure rounding are hatched",
            plots.flagged_bars(labels, values, [v > 2 * ideal for v in values], "RMSE / scale", "(> 2x)",
                               "{:.2f}", lines={f"pure rounding ({ideal:.3f})": ideal, "2x rounding": 2 * ideal})))
        section.add(Table(f"Worst layers: {name}", ["rank", "op", "ONNX node(s)", "RMSE/scale", "max abs err"], [
            [num(str(layer["rank"])), txt(layer["op"]), txt(", ".join(layer.get("onnx_nodes") or []) or layer["tensor"]),
             num(f"{layer['rmse_over_scale']:.3f}", flag="worse" if layer["rmse_over_scale"] > 2 * ideal else None),
             num(dash_or(layer.get("max_abs_error"), ".4g"))] for layer in layers[:10]]))
        section.add(*_fix_blocks(blame.get("fix")))
    return section


def _fix_blocks(fix: dict | None) -> list:
    if not fix:
        return [Note("No fix tried: `mixdeploy parity` converts again with the worst layers in float and "
                     "re-runs parity on it when an int8 model fails (or with `--keep-float auto`).")]
    rerun, before = fix.get("parity") or {}, fix.get("before") or {}
    base, cand = fix.get("baseline") or {}, fix.get("candidate") or {}
    verdict = txt("passes every threshold", flag="better") if fix.get("passed") else txt("still fails", flag="worse")
    return [Heading("The fix, verified: " + ", ".join(fix.get("keep_float", [])) + " kept in float"),
            Table("Keep-float fix", ["", "int8 as exported", "with the fix"], [
                [txt("file size"), num(megabytes(base.get("file_size"))), num(megabytes(cand.get("file_size")))],
                [txt("LiteRT latency (ms)"), num(ms(base.get("latency_ms"))),
                 num(f"{ms(cand.get('latency_ms'))} (x{fix.get('latency_ratio', float('nan')):.2f})")],
                [txt("top-1 agreement"), num(pct(before.get("top1_agreement"))), num(pct(rerun.get("top1_agreement")))],
                [txt("top-1 drop (points)"), num(dash_or(before.get("top1_drop_points"), "+.2f")),
                 num(dash_or(rerun.get("top1_drop_points"), "+.2f"))],
                [txt("parity gate"), txt(""), verdict]])]


# ------------------------------------------------------------------ the graph

def onnx_histograms(manifest: dict) -> dict[str, dict[str, int]]:
    stages = manifest.get("stages") or {}
    out = {}
    if (stages.get("export") or {}).get("op_histogram"):
        out[stages["export"].get("path", "model.onnx")] = stages["export"]["op_histogram"]
    passes = (stages.get("rewrite") or {}).get("passes") or []
    if passes and passes[-1].get("ops_after"):
        out["model.opt.onnx"] = passes[-1]["ops_after"]
    return out


def tflite_histograms(manifest: dict) -> dict[str, dict[str, int]]:
    convert = (manifest.get("stages") or {}).get("convert") or {}
    return {c.get("path", f"model_{p}.tflite"): c["op_histogram"] for p, c in convert.items() if c.get("op_histogram")}


def bytes_key(export_label: str, file: str) -> str:
    return f"bytes:{export_label}:{file}"


def graph_section(inputs: Inputs) -> Section:
    section = Section("graph", "The graph: ops, MixConv lowering, files, tools")
    if not inputs.exports:
        return section.add(Note("No export folder: give the folder `mixdeploy export -o DIR` wrote "
                                "(its manifest.json has ops, lowering, sizes and versions)."))
    for i, export in enumerate(inputs.exports):
        section.add(*_export_blocks(export, i))
    section.add(_tools_table(inputs.exports))
    return section


def _export_blocks(export: Export, index: int) -> list:
    manifest = export.manifest
    model = manifest.get("model") or {}
    rewrite = (manifest.get("stages") or {}).get("rewrite") or {}
    pre = manifest.get("preprocessing") or {}
    blocks = [Heading(f"{export.label}: {export.folder}"), Paragraph(
        f"{model.get('params', 0) / 1e6:.2f}M params, {model.get('macs', 0) / 1e6:.1f}M MACs at "
        f"{pre.get('input_size', '?')} px, lowering {rewrite.get('lowering', '?')}, "
        f"{model.get('num_classes', '?')} classes, exported in {manifest.get('export_seconds', '?')} s")]
    tflite = tflite_histograms(manifest)
    if tflite:
        ops = sorted({op for h in tflite.values() for op in h}, key=lambda op: -max(h.get(op, 0) for h in tflite.values()))
        blocks.append(Plot(f"op-histogram-{index}", f"TFLite ops per file: {export.label}",
                           f"Count of each TFLite op type in {', '.join(tflite)}",
                           plots.grouped_barh(ops, {f: [h.get(op, 0) for op in ops] for f, h in tflite.items()}, "ops")))
    histograms = {**onnx_histograms(manifest), **tflite}
    if histograms:
        ops = sorted({op for h in histograms.values() for op in h})
        blocks.append(Table(f"Op histogram: {export.label}", ["op", *histograms], [
            [txt(op), *(num(str(h.get(op, 0)) if h.get(op) else "") for h in histograms.values())] for op in ops]))
    blocks.append(_mixconv_table(export, rewrite))
    blocks.append(_files_table(export))
    return [b for b in blocks if b is not None]


def _mixconv_table(export: Export, rewrite: dict):
    passes = {p.get("name"): p.get("details") or {} for p in rewrite.get("passes") or []}
    mixconvs = passes.get("recognize_mixconv", {}).get("mixconvs") or []
    if not mixconvs:
        return Note(f"{export.label}: the rewrite found no MixConv layer.")
    lowered = {layer["name"]: layer for layer in passes.get("lower_mixconv", {}).get("layers") or []}
    rows = []
    for mix in mixconvs:
        kernels = [f"{k[0]}x{k[1]}" + ("*" if k[0] * k[1] > SLOW_DEPTHWISE_TAPS else "") for k in mix.get("kernels", [])]
        low = lowered.get(mix["name"], {})
        rows.append([txt(mix["name"]), txt(" ".join(kernels)), txt("+".join(map(str, mix.get("channels", [])))),
                     txt("x".join(map(str, mix.get("input_hw", [])))), txt(low.get("applied", "-")),
                     num(str(low.get("extra_macs", 0))), txt(low.get("note", ""))])
    return Table(f"MixConv layers and their lowering: {export.label} (* = over {SLOW_DEPTHWISE_TAPS} taps, "
                 f"off XNNPACK's depthwise fast path unless lowered)",
                 ["layer", "kernels", "channels", "input", "lowering", "extra MACs", "note"], rows)


def _files_table(export: Export) -> Table:
    rows = [[txt(f["path"]), num(megabytes(f.get("bytes"))),
             num(f"{f['bytes']:,}" if f.get("bytes") is not None else "-", key=bytes_key(export.label, f["path"])),
             txt((f.get("sha256") or "")[:12])]
            for f in export.manifest.get("files") or []]
    return Table(f"Files: {export.label}", ["file", "size", "bytes", "sha256"], rows)


def _tools_table(exports: list[Export]) -> Table:
    tools = sorted({t for e in exports for t in (e.manifest.get("tools") or {})})
    return Table("Tool versions", ["tool", *(e.label for e in exports)],
                 [[txt(t), *(txt((e.manifest.get("tools") or {}).get(t, "-")) for e in exports)] for t in tools])


# ------------------------------------------------------------------ against the baseline

def baseline_section(changes, baseline_name: str, tolerances: Tolerances) -> Section:
    section = Section("baseline", f"Against the baseline ({baseline_name})")
    section.add(Paragraph(f"Flagged: latency or file size changed by more than {tolerances.relative_pct:g}%, "
                          f"top-1 agreement or accuracy by more than {tolerances.accuracy_points:g} points."))
    if not changes.rows:
        section.add(Note("Nothing to compare: the baseline and this release share no model, file or backend."))
    rows = []
    for c in sorted(changes.rows, key=lambda c: (not c.flagged, c.what, c.item)):
        rows.append([txt(c.what), txt(c.item), num(c.before_text), num(c.after_text), num(c.change_text),
                     txt(c.verdict, flag=("worse" if c.worse else "better") if c.flagged else None)])
    if rows:
        section.add(Table("Changes against the baseline", ["what", "item", "baseline", "now", "change", "verdict"], rows))
    section.add(*(Note(n) for n in changes.unmatched))
    return section
