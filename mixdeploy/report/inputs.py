"""What `mixdeploy report` reads: export folders and the JSON other commands write.

Recognised by shape, not by file name (CI jobs rename files):
  manifest   `mixdeploy export`'s manifest.json: {"model": {...}, "stages": {...}}
  bench      `mixdeploy bench --json`: {"results": [...], "table": [...]}
  parity     `mixdeploy parity --json`, or parity.json from `--report DIR`: {"reference", "backends", "checks"}
  blame      blame.json from `parity --report DIR`: {"layers": [...], "ideal_rmse_over_scale"}
A folder is searched (a few levels down) for all of these; a JSON file in a folder that is none
of them is skipped with a note, while one named on the command line is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mixdeploy.errors import MixdeployError

MAX_DEPTH = 3          # release folder / model folder / parity folder
WHAT_TO_GIVE = ("give export folders (with manifest.json), the output of `mixdeploy bench --json` "
                "or `mixdeploy parity --json`, or a `parity --report` folder")


@dataclass
class Export:
    folder: Path
    manifest: dict
    label: str = ""            # model name, plus the folder when two exports share a model

    @property
    def model_name(self) -> str:
        return str((self.manifest.get("model") or {}).get("name") or self.folder.name)


@dataclass
class Document:
    path: Path
    kind: str                  # "bench" | "parity" | "blame"
    data: dict


@dataclass
class Inputs:
    exports: list[Export] = field(default_factory=list)
    bench: list[Document] = field(default_factory=list)
    parity: list[Document] = field(default_factory=list)
    blame: list[Document] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # what was skipped, and why

    @property
    def empty(self) -> bool:
        return not (self.exports or self.bench or self.parity or self.blame)


def kind_of(doc) -> str | None:
    """Which command wrote `doc`, judged by its keys; None when it is none of ours."""
    if not isinstance(doc, dict):
        return None
    if isinstance(doc.get("model"), dict) and isinstance(doc.get("stages"), dict):
        return "manifest"
    if isinstance(doc.get("results"), list) and isinstance(doc.get("table"), list):
        return "bench"
    if isinstance(doc.get("backends"), list) and isinstance(doc.get("reference"), dict) and "checks" in doc:
        return "parity"
    if isinstance(doc.get("layers"), list) and "ideal_rmse_over_scale" in doc:
        return "blame"
    return None


# Keys each entry of a recognised document must have: the report reads them without further checks.
REQUIRED = {
    "parity": {"backends": ("backend", "top1_agreement", "images"), "reference": ("backend",)},
    "blame": {"layers": ("rank", "op", "tensor", "rmse_over_scale")},
    "bench": {"results": (), "table": ()},
    "manifest": {"files": ("path",)},
}


def check_shape(kind: str, doc: dict, path: Path) -> None:
    """Refuse a document of a known kind whose entries lack what the report reads (edited, truncated, old)."""
    for key, needed in REQUIRED[kind].items():
        entries = doc.get(key) or []
        entries = [entries] if isinstance(entries, dict) else entries
        for entry in entries if isinstance(entries, list) else [None]:
            missing = [k for k in needed if k not in entry] if isinstance(entry, dict) else ["(an object)"]
            if missing:
                raise MixdeployError(f"{path}: an entry of `{key}` lacks {', '.join(missing)}; write it again "
                                     f"with this mixdeploy (`{kind}` output), or leave the file out")
    if kind == "parity" and isinstance(doc.get("blame"), dict):
        check_shape("blame", doc["blame"], path)


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise MixdeployError(f"{path} is not readable JSON ({err}); {WHAT_TO_GIVE}") from None


def collect(paths, what: str = "input") -> Inputs:
    """Everything the report can use under `paths` (folders and JSON files)."""
    inputs = Inputs()
    seen: set[Path] = set()
    for given in map(Path, paths):
        if not given.exists():
            raise MixdeployError(f"{what} {given} does not exist; {WHAT_TO_GIVE}")
        if given.is_dir():
            for path in _json_files(given):
                _add(inputs, path, seen, explicit=False)
        else:
            _add(inputs, given, seen, explicit=True)
    _drop_blame_already_in_parity(inputs)
    _label_exports(inputs.exports)
    return inputs


def _json_files(folder: Path, depth: int = 0):
    entries = sorted(folder.iterdir())
    yield from (p for p in entries if p.is_file() and p.suffix == ".json")
    if depth < MAX_DEPTH:
        for sub in entries:
            # dot folders are the pipeline's staging and tools' caches, never results
            if sub.is_dir() and not sub.name.startswith("."):
                yield from _json_files(sub, depth + 1)


def _add(inputs: Inputs, path: Path, seen: set[Path], explicit: bool) -> None:
    resolved = path.resolve()
    if resolved in seen:
        return
    seen.add(resolved)
    doc = read_json(path)
    kind = kind_of(doc)
    if kind is None:
        if explicit:
            raise MixdeployError(f"{path} is JSON of a shape `mixdeploy report` does not know; {WHAT_TO_GIVE}")
        inputs.notes.append(f"skipped {path}: not a manifest, bench, parity or blame result")
    else:
        check_shape(kind, doc, path)
        if kind == "manifest":
            inputs.exports.append(Export(folder=path.parent, manifest=doc))
        else:
            getattr(inputs, kind).append(Document(path=path, kind=kind, data=doc))


def _drop_blame_already_in_parity(inputs: Inputs) -> None:
    """`parity --report DIR` writes the blame twice (inside parity.json and as blame.json): keep one."""
    in_parity = {(p.data.get("blame") or {}).get("tflite") for p in inputs.parity} - {None}
    inputs.blame = [b for b in inputs.blame if b.data.get("tflite") not in in_parity]


def _label_exports(exports: list[Export]) -> None:
    names = [e.model_name for e in exports]
    for export in exports:
        shared = names.count(export.model_name) > 1
        export.label = f"{export.model_name} ({export.folder.name})" if shared else export.model_name
