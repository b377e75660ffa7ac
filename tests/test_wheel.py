"""A wheel built from the repo, installed in a fresh venv, benchmarks a phone (issue 11).

`pip wheel . --no-deps --no-build-isolation` on a copy of the checkout (so the build leaves no
build/ or egg-info in it), a venv with --system-site-packages (torch, TensorFlow, LiteRT from
the system) holding the wheel (--no-deps; the venv's own site-packages comes before any
editable install of the checkout), then the venv's `mixdeploy bench` from a folder outside the
repo, PYTHONPATH unset, against the emulated Pixel 7 of tests/adb_emulator.py. Everything the
phone side needs must come from the wheel: the device profiles and the device script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from adb_emulator import ADB_CANDIDATES, FAKE_TOOL, AdbLab
from bench_tiny_model import build_tiny_tflite

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DATA = ("android_bench/device/mixdeploy_bench.sh", "mixdeploy/bench/device_profiles.json")

pytestmark = [pytest.mark.skipif(not Path(ADB_CANDIDATES[0]).exists(), reason="needs Debian's adb"),
               pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(),
                                  reason="copies the checkout's files as git lists them")]


def run(args, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def copy_checkout(target: Path) -> None:
    """The files git would commit (tracked and new, not ignored): what a clean clone builds from."""
    listed = run(["git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    source, dist, venv = root / "src", root / "dist", root / "venv"
    copy_checkout(source)
    run([sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation", "-q", "-w", dist])
    shutil.rmtree(source)                  # nothing of the build is left to import from
    [wheel] = dist.glob("mixdeploy-*.whl")
    assert set(PACKAGE_DATA) <= set(zipfile.ZipFile(wheel).namelist())
    # --without-pip: the system pip installs into it (--python), no ensurepip round
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv])
    run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "-q", wheel])
    return venv


def outside_env(lab: AdbLab) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANDROID_SERIAL", "MIXDEPLOY_BENCHMARK_MODEL",
                                                             "MIXDEPLOY_DEVICE_PROFILES")}
    return {**env, "ANDROID_ADB_SERVER_PORT": lab.env["ANDROID_ADB_SERVER_PORT"], "HOME": lab.env["HOME"]}


def test_the_wheel_in_a_fresh_venv_benchmarks_a_phone_with_its_profile(venv, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    model = build_tiny_tflite(elsewhere / "tiny.tflite")
    tool = elsewhere / "benchmark_model"
    tool.write_text(f"#!{sys.executable}\n" + FAKE_TOOL.read_text())
    tool.chmod(0o755)
    (tmp_path / "lab").mkdir()
    lab = AdbLab(tmp_path / "lab", ADB_CANDIDATES[0])
    try:
        # All cores at one frequency: without its profile this phone would be pinned to all 8
        # (the fastest online cores), with the Pixel 7 profile to the X1 pair (c0), 2 threads.
        dev = lab.add("pixel", model="Pixel 7", cpus=(2000000,) * 8)
        env = outside_env(lab)
        where = run([venv / "bin" / "python", "-c",
                     "import mixdeploy, android_bench, cli; from mixdeploy.bench import device_script\n"
                     "with device_script.local_script() as p: print(mixdeploy.__file__, android_bench.__file__, "
                     "cli.__file__, p, sep='\\n')"], cwd=elsewhere, env=env).stdout.split()
        site = (venv / "lib").resolve()
        assert all(Path(p).resolve().is_relative_to(site) for p in where), where   # not the checkout's
        script = Path(where[3])
        out = run([venv / "bin" / "mixdeploy", "bench", model, "--device", dev.address, "--benchmark-binary", tool,
                   "--runs", "3", "--json"], cwd=elsewhere, env=env)
    finally:
        lab.close()
    [entry] = json.loads(out.stdout)["results"]
    assert entry["device_profile"] == "Google Tensor G2 (Pixel 7/7a/7 Pro, Fold, Tablet)"
    assert (entry["cpu_mask"], entry["threads"]) == ("c0", 2)
    assert not any("no device profile" in note for note in entry["notes"])
    assert entry["benchmark"]["inference"]["count"] == 3 and entry["benchmark"]["inference"]["avg_ms"] > 0   # a latency came back
    # the device script the phone ran is the wheel's file, pushed under its digest
    cache = dev.host_path("data/local/tmp/mixdeploy/cache")
    [pushed] = [p for p in cache.iterdir() if p.name.endswith("-mixdeploy_bench.sh")]
    assert pushed.read_bytes() == script.read_bytes()
    assert entry["command"].startswith(f"sh /data/local/tmp/mixdeploy/cache/{pushed.name} bench ")
    # and the phone is clean: no run folder, no model
    root = dev.host_path("data/local/tmp/mixdeploy")
    assert not list(root.glob("run-*")) and not list(root.rglob("*.tflite"))
