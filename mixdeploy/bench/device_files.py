"""What a benchmark leaves on a phone: nothing but the (hash-checked) benchmark binary.

- Each run works in its own folder, /data/local/tmp/mixdeploy/run-<time>-<random>/: the model,
  parity inputs and outputs go there, and the folder is removed after the run (also on failure
  or Ctrl-C).
- A phone that drops off mid-run cannot be cleaned from the host, so each run folder has a
  reaper on the phone: a detached `setsid sh` loop that removes the folder (and kills its tool)
  once the host has not touched `alive` in it for longer than one device command may take
  (--timeout) plus a margin. Every device command of the run touches `alive` first.
- The benchmark binary is cached in /data/local/tmp/mixdeploy/cache/ under its sha256 (pushed to
  a `.part` name, renamed when complete; a cache hit is checked with `sha256sum` on the phone).
  `--keep-on-device` caches models there too, least recently used first out beyond a size bound.
"""

from __future__ import annotations

import re
import secrets
import shlex
import time
from pathlib import Path

from mixdeploy.bench.adb import Adb
from mixdeploy.errors import DeviceError
from mixdeploy.manifest import sha256_file

DEVICE_ROOT = "/data/local/tmp/mixdeploy"
DEVICE_CACHE = f"{DEVICE_ROOT}/cache"
DEFAULT_CACHE_LIMIT_MB = 256
REAPER_TICK_S = 1
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


def reaper_script(run_dir: str, stale_after_s: float) -> str:
    """A loop that ends with the run folder: removes it (and kills its tool) when it goes stale."""
    return (f"while [ -d {run_dir} ]; do sleep {REAPER_TICK_S}; "
            f"age=$(( $(date +%s) - $(stat -c %Y {run_dir}/alive 2>/dev/null || echo 0) )); "
            f"if [ $age -gt {int(stale_after_s)} ]; then "
            f"kill -9 $(cat {run_dir}/pid 2>/dev/null) 2>/dev/null; rm -rf {run_dir}; fi; done")


def make_run_dir(adb: Adb, serial: str, run_dir: str, command_timeout_s: float) -> None:
    """Create the run folder with its reaper (detached: it outlives this shell and a lost host)."""
    reaper = reaper_script(run_dir, command_timeout_s + REAPER_MARGIN_S)
    adb.shell(serial, f"mkdir -p {run_dir} && touch {run_dir}/alive && "
                      f"(setsid sh -c {shlex.quote(reaper)} </dev/null >/dev/null 2>&1 &)", timeout=30, check=True)


def touch_command(run_dir: str) -> str:
    """Prefix for every command of a run: the reaper sees the host is still there."""
    return f"touch {run_dir}/alive; "


def push_into_run(adb: Adb, serial: str, local: Path, run_dir: str, timeout: float) -> str:
    remote = f"{run_dir}/{safe_name(local)}"
    adb.shell(serial, touch_command(run_dir).rstrip("; "), timeout=30)
    adb.push(serial, str(local), remote, timeout=timeout)
    return remote


def remove_run_dir(adb: Adb, serial: str, run_dir: str) -> None:
    """Best effort: a device that went away keeps its folder until its reaper removes it."""
    try:
        adb.shell(serial, f"rm -rf {run_dir}", timeout=30)
    except DeviceError:
        pass
