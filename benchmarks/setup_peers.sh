#!/usr/bin/env bash
# Peer converters for benchmarks/peers.py only, each in its own virtual environment because
# they pin versions that clash with ours (onnx2tf: TensorFlow 2.19, numpy 1.26, onnx 1.19, ...;
# litert-torch: jax, torchao, its own converter). Never imported by mixdeploy or its tests.
#   bash benchmarks/setup_peers.sh            -> .venv-onnx2tf/ and .venv-litert-torch/
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
echo "peer environments ready"
