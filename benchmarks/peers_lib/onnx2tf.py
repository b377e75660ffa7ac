"""onnx2tf 1.29: ONNX -> TensorFlow -> .tflite; full-integer int8 with `-oiqt`, run in LiteRT like ours.

onnx2tf calibrates on the images passed with `-cind INPUT FILE MEAN STD`: FILE holds them in
NHWC, [0, 1]; onnx2tf normalizes them with MEAN and STD itself. So the (already normalized)
calibration images are mapped back to [0, 1] with the checkpoint's own mean/std, and those go
to -cind. The int8 model is `<stem>_full_integer_quant.tflite` (int8 input and output); the
same run writes `<stem>_float32.tflite`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peers_lib.common import (SETUP_HINT, PeerError, Stopwatch, export_plain_onnx, package_version, run_logged,
                              venv_dir, write_facts)

VENV = ".venv-onnx2tf"
ONNX2TF = venv_dir(VENV) / "bin" / "onnx2tf"
# onnx2tf downloads a sample of this name at each conversion of a 3-channel model unless one lies
# in its working folder (it is only used when no -cind is given): plant one.
SAMPLE_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"


def convert_int8(checkpoint: str, calibration_nchw: np.ndarray, out_dir: Path, input_size: int | None,
                 with_float: bool) -> Path:
    if not ONNX2TF.exists():
        raise PeerError(f"{ONNX2TF} is missing: {SETUP_HINT}")
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, log = out_dir / "model.onnx", out_dir / "convert.log"
    with Stopwatch() as watch:
        loaded = export_plain_onnx(checkpoint, input_size, onnx_path)
        mean, std = loaded.preprocessing.mean, loaded.preprocessing.std
        images01 = denormalize_nhwc(calibration_nchw, mean, std)
        calib = out_dir / "calib_nhwc01.npy"
        np.save(calib, images01)
        np.save(out_dir / SAMPLE_NAME, _sample_128(images01))
        run_logged([ONNX2TF, "-i", onnx_path, "-o", out_dir / "saved_model", "-n",
                    "-oiqt", "-cind", "input", calib, _nested(mean), _nested(std)], log, cwd=out_dir)
    calib.unlink()
    int8 = out_dir / "saved_model" / "model_full_integer_quant.tflite"
    fp32 = out_dir / "saved_model" / "model_float32.tflite"
    if not int8.is_file():
        raise PeerError(f"onnx2tf finished without writing {int8.name} (log: {log})")
    write_facts(int8, "onnx2tf", package_version(VENV, "onnx2tf"), watch.seconds, len(calibration_nchw),
                fp32 if with_float and fp32.is_file() else None, log)
    return int8


def run_logits(model_path: Path, images_nchw: np.ndarray) -> np.ndarray:
    from mixdeploy.runtimes import TfliteRunner

    return TfliteRunner(model_path, name="onnx2tf").run(images_nchw)


def denormalize_nhwc(images_nchw: np.ndarray, mean, std) -> np.ndarray:
    """Normalized NCHW -> NHWC in [0, 1] (what -cind wants), float32."""
    mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((images_nchw * std + mean).transpose(0, 2, 3, 1), dtype=np.float32)


def _sample_128(images01_nhwc: np.ndarray) -> np.ndarray:
    import torch

    first = torch.from_numpy(images01_nhwc[:20]).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(first, size=(128, 128), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def _nested(values) -> str:
    # -cind's MEAN and STD are 4-d lists broadcast against NHWC.
    return "[[[[" + ",".join(repr(float(v)) for v in values) + "]]]]"
