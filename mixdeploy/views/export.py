"""`mixdeploy export`: an ExportResult (mixdeploy.pipeline) as the files written, the preprocessing
used and the parity summary."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mixdeploy.views import dash_or


def show(result, out: Console, notes_to: Console, verbose: bool = False) -> None:
    if result.tuned is not None:
        notes_to.print(escape(tuned_line(result)))
    show_files(result, out)
    if verbose:
        from mixdeploy.views import rewrite

        rewrite.show(result.manifest["stages"]["rewrite"], out)
    show_preprocessing(result.manifest, out)
    if "parity" in result.manifest:
        show_parity(result.manifest["parity"], out)


def tuned_line(result) -> str:
    """Where `--tuned-for` took the lowerings from."""
    tuned = result.tuned
    extra = f", {len(tuned.measured_here)} measured on this host" if tuned.measured_here else ""
    return (f"lowering tuned on {result.manifest['tuned']['fingerprint']['ro.product.model']}: "
            f"{len(tuned.from_tune)} layer(s) from {tuned.source}{extra}")


def show_files(result, out: Console) -> None:
    model = result.manifest["model"]
    # the folder on its own line: a long path in the title would wrap
    out.print(escape(f"{model['name']}: files written to {result.out_dir}"), soft_wrap=True)
    table = Table(title=escape(f"{model['params'] / 1e6:.2f}M params, {model['macs'] / 1e6:.1f}M MACs"))
    for column in ("file", "size", "ops"):
        table.add_column(column)
    convert = result.manifest["stages"].get("convert", {})
    for record in result.manifest["files"]:
        ops = ""
        for facts in convert.values():
            if str(facts.get("path", "")).endswith(record["path"]):
                ops = _short_histogram(facts.get("op_histogram", {}))
        table.add_row(escape(record["path"]), f"{record['bytes'] / 1e6:.2f} MB", ops)
    out.print(table)


def show_preprocessing(manifest: dict, out: Console) -> None:
    from mixdeploy.preprocess import Preprocessing

    used = Preprocessing.from_dict(manifest["preprocessing"]).describe()
    by_source: dict[str, list[str]] = {}
    for name, source in manifest.get("preprocessing_sources", {}).items():
        by_source.setdefault(source, []).append(name)
    origin = "; ".join(f"{', '.join(names)} from {source}" for source, names in by_source.items())
    out.print(escape(f"preprocessing: {used} ({origin})"))


def _short_histogram(histogram: dict) -> str:
    top = sorted(histogram.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {count}" for name, count in top)


def show_parity(parity: dict, out: Console) -> None:
    reference = parity.get("reference", "pytorch")
    out.print(escape(f"parity data: {parity['data']}"), soft_wrap=True)
    table = Table(title=escape(f"Parity vs {reference} on {parity['images']} images"))
    table.add_column("model", no_wrap=True)
    for column in ("top-1", "top-1 agreement", "logit cosine", "max abs err", "SQNR dB"):
        table.add_column(column, justify="right")
    if "reference_top1" in parity:
        table.add_row(escape(reference), f"{parity['reference_top1']:.2%}", "", "", "", "")
    for name, m in parity["backends"].items():
        table.add_row(escape(name), dash_or(m.get("top1"), ".2%"), f"{m['top1_agreement']:.2%}",
                      f"{m['mean_cosine']:.4f}", dash_or(m.get("max_abs_error"), ".3g"),
                      dash_or(m.get("sqnr_db"), ".1f"))
    out.print(table)
