"""An export folder: manifest.json and the model files `mixdeploy export` wrote beside it.

The one reader of that folder: parity, bench, the ARM64 twin and the tune path ask it for the
manifest's facts (preprocessing, input layout, MACs, lowering, the model it came from) and for
the ONNX graph a .tflite was converted from. A manifest that is there but not readable is an
error (export again or remove it), never silently skipped: it decides the preprocessing, and a
wrong one gives plausible but wrong numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mixdeploy.errors import MixdeployError
from mixdeploy.manifest import MANIFEST_NAME
# The rewritten graph first: it is what the .tflite files were converted from.
ONNX_NAMES = ("model.opt.onnx", "model.onnx")


@dataclass
class ExportFolder:
    folder: Path
    manifest: dict = field(default_factory=dict)     # {} when the folder has no manifest.json

    @classmethod
    def read(cls, folder: str | Path) -> "ExportFolder":
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            return cls(folder)
        try:
            manifest = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise MixdeployError(f"{path} is not valid JSON ({err}); export again or remove it") from None
        if not isinstance(manifest, dict):
            raise MixdeployError(f"{path} is not a mixdeploy manifest (a JSON object); export again or remove it")
        return cls(folder, manifest)

    @classmethod
    def beside(cls, model_path: str | Path) -> "ExportFolder":
        """The export folder a model file lies in."""
        return cls.read(Path(model_path).parent)

    @property
    def has_manifest(self) -> bool:
        return bool(self.manifest)

    @property
    def model_facts(self) -> dict:
        return self.manifest.get("model") or {}

    @property
    def model_name(self) -> str | None:
        return self.model_facts.get("name")

    @property
    def macs(self) -> int | None:
        macs = self.manifest.get("macs", self.model_facts.get("macs"))
        return int(macs) if macs is not None else None

    @property
    def lowering(self) -> str | None:
        return ((self.manifest.get("stages") or {}).get("rewrite") or {}).get("lowering")

    @property
    def input_layout(self) -> str:
        return str(self.manifest.get("input_layout", "nhwc")).lower()

    @property
    def io_dtype(self) -> str:
        return (self.manifest.get("quantization") or {}).get("io_dtype", "int8")

    @property
    def quant_recipe(self) -> str | None:
        """The name of the int8 recipe the export used (tflite.recipe.RECIPES); None if unrecorded."""
        recipe = (self.manifest.get("quantization") or {}).get("recipe")
        return recipe.get("name") if isinstance(recipe, dict) else recipe

    def preprocessing(self):
        """The Preprocessing the models were built and calibrated with; None without a manifest."""
        from mixdeploy.preprocess import Preprocessing

        facts = self.manifest.get("preprocessing")
        return Preprocessing.from_dict(facts) if isinstance(facts, dict) else None

    def onnx(self) -> Path | None:
        """The ONNX graph the folder's .tflite files were converted from, if it is there."""
        for name in ONNX_NAMES:
            if (self.folder / name).is_file():
                return self.folder / name
        return None


def export_folder_of(model_paths) -> ExportFolder:
    """The first of `model_paths`' folders that has a manifest (or the first folder, without one)."""
    first = None
    for path in model_paths:
        folder = ExportFolder.beside(path)
        if folder.has_manifest:
            return folder
        first = first or folder
    return first or ExportFolder(Path("."))
