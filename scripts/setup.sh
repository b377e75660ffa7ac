#!/usr/bin/env bash
# All set-up for mixdeploy on a fresh Debian machine, idempotent (a second run is quick).
#   bash scripts/setup.sh        # the tool itself
#   bash scripts/setup.sh test   # plus the test oracle (timm) and test tools
# Installs into the active Python (use a venv first if you want isolation).
set -euo pipefail
mode="${1:-run}"
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# System packages: the real adb client (phone benchmarks) and Fashion-MNIST (real labelled
# images for calibration and parity). Debian packages, so apt, once.
if ! command -v adb >/dev/null || [ ! -e /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ]; then
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q adb dataset-fashion-mnist
fi

# torch first: `torch==2.13.0` is the CPU wheel on these machines; any other request
# (or letting a dependency choose) pulls a multi-GB CUDA build.
"$PY" -m pip install -q --disable-pip-version-check torch==2.13.0
"$PY" -m pip install -q --disable-pip-version-check -e .

if [ "$mode" = test ]; then
  # Debian's Chromium renders `mixdeploy report` pages in tests/test_report.py (headless,
  # driven over the DevTools protocol by websocket-client from the [test] extra).
  if ! command -v chromium >/dev/null; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
  fi
  # mksh (Android's shell) and busybox: tests/test_device_script.py runs the phone's device
  # script under them as well as under dash.
  if ! command -v mksh >/dev/null || ! command -v busybox >/dev/null; then
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q mksh busybox
  fi
  # timm is the test oracle only. Its torchvision dependency would pull a CUDA torch:
  # the constraints file pins torch==2.13.0 and torchvision==0.28.0. The `ray` extra
  # (`parity --ray`) is optional for users; the tests run it on a local cluster.
  "$PY" -m pip install -q --disable-pip-version-check -c scripts/test-constraints.txt -e ".[test,ray]" timm
  # The ARM64 twin (qemu-user + an arm64 Debian root + LiteRT's aarch64 wheel, ~40 s, cached in
  # ~/.cache/mixdeploy/arm64-twin): the tests compare the phone's CPU kernels with the host's.
  PYTHON="$PY" bash android_bench/setup_arm64_twin.sh
fi
echo "mixdeploy set-up done ($mode)."
