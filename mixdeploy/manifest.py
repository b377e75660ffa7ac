"""manifest.json: every stage adds its facts, so an artifact can be trusted later.

Source, weights hash, MACs, params, op histograms, quantization settings, parity
summary, tool versions and the hash of every file written.
"""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

from mixdeploy.atomic import write_json_atomic

MANIFEST_NAME = "manifest.json"

# Distributions whose versions decide what an artifact contains.
_TOOLS = ("mixdeploy", "torch", "onnx", "onnxruntime", "onnxsim", "onnx-ir",
          "tensorflow-cpu", "tensorflow", "ai-edge-litert", "numpy")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(path: str | Path, root: str | Path | None = None) -> dict:
    path = Path(path)
    name = str(path.relative_to(root)) if root else path.name
    return {"path": name, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for dist in _TOOLS:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def write_manifest(out_dir: str | Path, manifest: dict) -> Path:
    return write_json_atomic(Path(out_dir) / MANIFEST_NAME, manifest)
