#!/usr/bin/env bash
# Peer converters for benchmarks/peers.py and benchmarks/peers_accuracy.py only (benchmarks/peers_lib),
# each in its own virtual environment because they pin versions that clash with ours (onnx2tf:
# TensorFlow 2.19, numpy 1.26, onnx 1.19, ...; litert-torch: jax, torchao, its own converter;
# ExecuTorch: torchao, coremltools, protobuf 7). Never imported by mixdeploy or its tests.
# onnxruntime's quantize_static, the fourth peer, runs in the main environment (a dependency).
#   bash benchmarks/setup_peers.sh    -> .venv-onnx2tf/, .venv-litert-torch/, .venv-executorch/ (about 8 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [ ! -x .venv-onnx2tf/bin/onnx2tf ]; then
  "$PY" -m venv .venv-onnx2tf
  .venv-onnx2tf/bin/pip install -q --disable-pip-version-check onnx2tf==1.29.24
  # onnx2tf's own pins leave out a few imports it needs at run time.
  .venv-onnx2tf/bin/pip install -q --disable-pip-version-check \
    "onnx2tf==1.29.24" "sng4onnx" "onnx_graphsurgeon==0.5.8" "tf-keras==2.19.0" || true
fi

if [ ! -x .venv-litert-torch/bin/python ] || ! .venv-litert-torch/bin/python -c "import litert_torch" 2>/dev/null; then
  "$PY" -m venv .venv-litert-torch
  # torch first, the local CPU wheel: otherwise litert-torch's range pulls a CUDA build.
  .venv-litert-torch/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv-litert-torch/bin/pip install -q --disable-pip-version-check -c scripts/test-constraints.txt \
    litert-torch==0.10.0 -e .
fi
if [ ! -x .venv-executorch/bin/python ] || ! .venv-executorch/bin/python -c "import executorch.runtime" 2>/dev/null; then
  "$PY" -m venv .venv-executorch
  # torch 2.13.0 first, the local CPU wheel: executorch 1.5.1 then takes it as it is; any other
  # torch request pulls a multi-GB CUDA build. The drivers import mixdeploy.models from the
  # checkout (PYTHONPATH), so mixdeploy itself is not installed there.
  .venv-executorch/bin/pip install -q --disable-pip-version-check torch==2.13.0
  .venv-executorch/bin/pip install -q --disable-pip-version-check torch==2.13.0 executorch==1.5.1
fi
echo "peer environments ready"
