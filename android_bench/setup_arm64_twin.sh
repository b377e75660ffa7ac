#!/usr/bin/env bash
# Builds the ARM64 twin: the phone's own CPU kernels (LiteRT's aarch64 build, XNNPACK's ARM
# code paths) run on this x86 machine under qemu-user, for on-device parity without a phone.
#
#   bash android_bench/setup_arm64_twin.sh
#
# What it makes, in $MIXDEPLOY_ARM64_TWIN (default ~/.cache/mixdeploy/arm64-twin):
#   root/   a minimal Debian bookworm arm64 file system with python3.11 (debootstrap's first
#           stage, then `dpkg -x` of every package it downloaded: no second stage, no chroot)
#   site/   the aarch64 cp311 wheels of numpy and ai-edge-litert, unpacked (the guest's PYTHONPATH)
#   ready.json  written last, only after a smoke run inside the twin reported aarch64: a
#           folder without it is not used (mixdeploy.bench.twin says to run this script).
# Idempotent: with ready.json present for this recipe it only checks qemu and exits.
# Needs root (or sudo) for apt-get, and network to Debian and PyPI.
set -Eeuo pipefail

LITERT_VERSION=1.4.0      # the last ai-edge-litert with aarch64 cp311 wheels on PyPI
NUMPY_VERSION=2.2.6       # manylinux_2_17 aarch64 wheel; litert needs numpy >= 1.23.2
SUITE=bookworm
RECIPE="debian-$SUITE-arm64-minbase+python3 ai-edge-litert==$LITERT_VERSION numpy==$NUMPY_VERSION"
MIRROR="${MIXDEPLOY_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TWIN="${MIXDEPLOY_ARM64_TWIN:-$HOME/.cache/mixdeploy/arm64-twin}"
PY="${PYTHON:-python3}"
QEMU=qemu-aarch64-static

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
STEP="start"
step() { STEP="$1"; echo "arm64 twin: [${SECONDS}s] $1" >&2; }
trap '[ "$BASH_SUBSHELL" -gt 0 ] || echo "arm64 twin set-up FAILED at step: $STEP (see the messages above); $TWIN is not marked ready. Fix the cause and run this script again." >&2' ERR

if ! command -v "$QEMU" >/dev/null || ! command -v debootstrap >/dev/null; then
  step "install qemu-user-static and debootstrap (apt)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    qemu-user-static debootstrap
fi

if [ -f "$TWIN/ready.json" ] && grep -qF "\"recipe\": \"$RECIPE\"" "$TWIN/ready.json"; then
  echo "arm64 twin: ready at $TWIN ($RECIPE)" >&2
  exit 0
fi
mkdir -p "$TWIN"
rm -f "$TWIN/ready.json"          # whatever follows, the old marker no longer vouches for it

guest_python() {   # guest_python ROOT SITE ARGS...: the aarch64 python3.11, isolated from the host's
  local root="$1" site="$2"; shift 2
  env -i PATH=/usr/bin:/bin PYTHONPATH="$site" PYTHONNOUSERSITE=1 \
    "$QEMU" -L "$root" "$root/usr/bin/python3.11" -S "$@"
}

if [ ! -x "$TWIN/root/usr/bin/python3.11" ]; then
  step "debootstrap a Debian $SUITE arm64 root (first stage, from $MIRROR)"
  as_root rm -rf "$TWIN/root.part"
  as_root debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 \
    "$SUITE" "$TWIN/root.part" "$MIRROR" >"$TWIN/debootstrap.log" 2>&1 \
    || { tail -n 20 "$TWIN/debootstrap.log" >&2; false; }
  step "unpack python3.11 and its libraries into the root (dpkg -x)"
  # The first stage unpacks only the essential packages; python3 and its dependencies are
  # downloaded but not unpacked. Unpacking every downloaded .deb needs no arm64 maintainer
  # scripts (no second stage), which is all a Python interpreter needs.
  for deb in "$TWIN/root.part"/var/cache/apt/archives/*.deb; do
    as_root dpkg -x "$deb" "$TWIN/root.part"
  done
  as_root rm -f "$TWIN/root.part"/var/cache/apt/archives/*.deb
  [ "$(id -u)" = 0 ] || as_root chown -R "$(id -u):$(id -g)" "$TWIN/root.part"
  step "check the arm64 python3.11 starts under qemu"
  guest_python "$TWIN/root.part" /nonexistent -B -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); print("guest python", sys.version.split()[0], platform.machine())' >&2
  mv "$TWIN/root.part" "$TWIN/root"
fi

step "download the aarch64 wheels (ai-edge-litert==$LITERT_VERSION, numpy==$NUMPY_VERSION) from PyPI"
rm -rf "$TWIN/site.part" "$TWIN/wheels.part" "$TWIN/site"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
  --platform manylinux_2_17_aarch64 --python-version 3.11 --implementation cp --abi cp311 \
  -d "$TWIN/wheels.part" "ai-edge-litert==$LITERT_VERSION" "numpy==$NUMPY_VERSION"
step "unpack the wheels into site/"
for wheel in "$TWIN/wheels.part"/*.whl; do
  "$PY" -m zipfile -e "$wheel" "$TWIN/site.part"
done
rm -rf "$TWIN/wheels.part"

step "byte-compile the guest's standard library and wheels"
# Debian byte-compiles in maintainer scripts, which never ran here. Compiled once, a start of
# the guest python takes ~0.6 s instead of ~1.4 s; the runs themselves never write .pyc files (-B).
# The paths are given as host paths: under `-L` a path missing in the root is the host's.
guest_python "$TWIN/root" "$TWIN/site.part" -m compileall -q -x '/(test|tests|idlelib|lib2to3)/' \
  "$TWIN/root/usr/lib/python3.11" "$TWIN/site.part" >/dev/null \
  || echo "arm64 twin: warning: some files did not byte-compile (the twin only starts slower)" >&2

step "smoke run: LiteRT inside the twin"
facts=$(guest_python "$TWIN/root" "$TWIN/site.part" -B -c '
import json, platform, sys
import numpy
from ai_edge_litert import interpreter
print(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "numpy": numpy.__version__}))')
echo "arm64 twin: inside: $facts" >&2
case "$facts" in *'"machine": "aarch64"'*) ;; *) echo "the twin did not report aarch64" >&2; false;; esac
mv "$TWIN/site.part" "$TWIN/site"

step "write ready.json"
"$PY" - "$TWIN/ready.json.part" "$RECIPE" "$SUITE" "$LITERT_VERSION" "$NUMPY_VERSION" \
  "$("$QEMU" --version | head -n1)" "$facts" <<'PYEOF'
import json, sys, time
path, recipe, suite, litert, numpy, qemu, guest = sys.argv[1:]
facts = {"recipe": recipe, "suite": suite, "ai_edge_litert": litert, "numpy": numpy, "qemu": qemu,
         "guest": json.loads(guest), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
open(path, "w").write(json.dumps(facts) + "\n")
PYEOF
mv "$TWIN/ready.json.part" "$TWIN/ready.json"
echo "arm64 twin: ready at $TWIN ($RECIPE)" >&2
