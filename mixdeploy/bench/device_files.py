"""What a benchmark leaves on a phone: nothing but hash-checked files in its cache.

- Each run works in its own folder, /data/local/tmp/mixdeploy/run-<time>-<random>/: the model,
  parity inputs and outputs go there, and the folder is removed after the run (also on failure
  or Ctrl-C). The device script (device_script.py) makes and removes it.
- A phone that drops off mid-run cannot be cleaned from the host, so each run folder has a
  reaper on the phone (started by the script, detached): it removes the folder (and kills its
  tool) once the host has not touched it for longer than one device command may take
  (--timeout) plus a margin. The script's bench and parity actions touch it when they start, and
  the host touches it before each push into it.
- The benchmark binary and the device script are cached in /data/local/tmp/mixdeploy/cache/
  under their sha256 (pushed to a `.part` name, renamed when complete; a cache hit is checked
  with `sha256sum` on the phone). `--keep-on-device` caches models there too, least recently
  used first out beyond a size bound.
"""

from __future__ import annotations

import re
import secrets
import shlex
import time
from pathlib import Path

from mixdeploy.bench.adb import Adb
from mixdeploy.manifest import sha256_file

DEVICE_ROOT = "/data/local/tmp/mixdeploy"
DEVICE_CACHE = f"{DEVICE_ROOT}/cache"
DEFAULT_CACHE_LIMIT_MB = 256
REAPER_MARGIN_S = 5       # beyond the longest device command: the host's round trip between commands


def safe_name(local: Path) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", local.name)


def cached_remote_path(local: Path, digest: str) -> str:
    return f"{DEVICE_CACHE}/{digest[:16]}-{safe_name(local)}"


def push_cached(adb: Adb, serial: str, local: Path, executable: bool = False,
                timeout: float = 300.0) -> tuple[str, bool]:
    """Push `local` under its content hash unless that exact file is there. Returns (remote, pushed).

    The push goes to a `.part` name and is renamed on the device, so a file under its final name
    is complete; a hit is still checked with `sha256sum` there (and refreshed for the LRU bound).
    """
    digest = sha256_file(local)
    remote = cached_remote_path(local, digest)
    check = adb.shell(serial, f"sha256sum {remote} && touch {remote}", timeout=60)
    if check.ok and check.stdout.split()[:1] == [digest]:
        return remote, False
    adb.shell(serial, f"mkdir -p {DEVICE_CACHE}", timeout=30, check=True)
    adb.push(serial, str(local), remote + ".part", timeout=timeout)
    mode = "chmod 755" if executable else "chmod 644"
    adb.shell(serial, f"{mode} {remote}.part && mv -f {remote}.part {remote}", timeout=30, check=True)
    return remote, True


def evict_cache(adb: Adb, serial: str, keep: set[str], limit_bytes: int) -> list[str]:
    """Remove the least recently used cache files (never those in `keep`) until the cache fits."""
    listing = adb.shell(serial, f"stat -c '%Y %s %n' {DEVICE_CACHE}/*", timeout=30)
    entries = []
    for line in listing.stdout.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            entries.append((int(parts[0]), int(parts[1]), parts[2]))
    total = sum(size for _, size, _ in entries)
    evicted = []
    for _, size, name in sorted(entries):
        if total <= limit_bytes:
            break
        if name not in keep:
            evicted.append(name)
            total -= size
    if evicted:
        adb.shell(serial, "rm -f " + " ".join(shlex.quote(n) for n in evicted), timeout=30, check=True)
    return evicted


def new_run_dir() -> str:
    return f"{DEVICE_ROOT}/run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def push_into_run(adb: Adb, serial: str, local: Path, run_dir: str, timeout: float) -> str:
    """Push `local` into the run folder (touch the folder first: a push is no script action)."""
    remote = f"{run_dir}/{safe_name(local)}"
    adb.push(serial, str(local), remote, timeout=timeout)
    return remote
