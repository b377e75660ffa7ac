"""Phone benchmark path end to end: the REAL adb client/server against an emulated device.

The device (tests/adb_emulator.py) listens on a free loopback port; each test gets a private
adb server (free ANDROID_ADB_SERVER_PORT, private HOME) killed at teardown. Device file system:
a sandbox folder, shell commands path-mapped into it (no bubblewrap). Its "benchmark_model" is
tests/data/fake_benchmark_model.py, which runs the pushed model with host LiteRT, so timings are
real, and writes the --output_filepath bytes as ARM kernels compute them: by the ARM64 twin
(mixdeploy.bench.twin) when it is set up, so on-device parity compares real ARM outputs with the
host's. Without the twin the host's outputs stand in (parity exact by construction).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from adb_emulator import ADB_CANDIDATES, FAKE_TOOL, AdbLab, EmulatedDevice
from bench_tiny_model import build_tiny_tflite
from mixdeploy.bench import phone, twin
from mixdeploy.bench.adb import Adb, CommandTimeout, parse_devices_output
from mixdeploy.errors import DeviceError, MixdeployError

RUN_DIRS = "data/local/tmp/mixdeploy"
SCRIPT = "mixdeploy_bench.sh"                      # the device script, as the host calls it
BENCH_STEP = f"{SCRIPT} bench "                    # the shell command that runs benchmark_model

pytestmark = pytest.mark.skipif(not Path("/usr/bin/adb").exists(), reason="needs Debian's adb")
TWIN_MISSING = twin.missing_reason()
needs_twin = pytest.mark.skipif(TWIN_MISSING is not None, reason=f"ARM64 twin not set up: {TWIN_MISSING}")


@pytest.fixture
def lab(tmp_path, monkeypatch):
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    monkeypatch.delenv("MIXDEPLOY_BENCHMARK_MODEL", raising=False)
    monkeypatch.setenv(twin.TWIN_ENV, str(twin.twin_dir()))   # the twin stays found under the new HOME
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))    # no real ~/.config/mixdeploy
    lab = AdbLab(tmp_path, ADB_CANDIDATES[0])
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"fp32": build_tiny_tflite(root / "tiny_fp32.tflite"),
            "int8": build_tiny_tflite(root / "tiny_int8.tflite", int8=True)}


@pytest.fixture(scope="module")
def fake_tool(tmp_path_factory):
    """The stand-in benchmark_model, with a shebang for this interpreter (it imports LiteRT)."""
    path = tmp_path_factory.mktemp("tool") / "benchmark_model"
    path.write_text(f"#!{sys.executable}\n" + FAKE_TOOL.read_text())
    path.chmod(0o755)
    return path


def model_files(dev: EmulatedDevice) -> list[str]:
    return sorted(str(p.relative_to(dev.sandbox)) for p in dev.host_path("data").rglob("*.tflite"))


def run_dirs(dev: EmulatedDevice) -> list[str]:
    root = dev.host_path(RUN_DIRS)
    return sorted(p.name for p in root.glob("run-*")) if root.exists() else []


# --- discovery and selection ---------------------------------------------------------------------

def test_devices_lists_the_emulated_phone_with_its_model(lab):
    dev = lab.add("pixel", model="Pixel 7")
    [info] = lab.adb.devices()
    assert (info.serial, info.state, info.model) == (dev.address, "device", "Pixel_7")


def test_select_by_model_substring_case_insensitive_among_two(lab):
    pixel = lab.add("pixel", model="Pixel 7")
    lab.add("galaxy", model="SM-S911B", product="dm1qxxx", device="dm1q",
            props={"ro.board.platform": "kalama"})
    assert [d.serial for d in lab.adb.select("pIxEl")] == [pixel.address]
    assert len(lab.adb.select("all")) == 2
    with pytest.raises(DeviceError, match=r"(?s)several devices are attached.*Pixel_7"):
        lab.adb.select(None)
    with pytest.raises(DeviceError, match=r"(?s)no attached device matches 'oneplus'.*SM.S911B"):
        lab.adb.select("oneplus")


def test_android_serial_picks_the_default_device(lab, monkeypatch):
    lab.add("pixel")
    galaxy = lab.add("galaxy", model="SM-S911B")
    monkeypatch.setenv("ANDROID_SERIAL", galaxy.address)
    assert [d.serial for d in lab.adb.select(None)] == [galaxy.address]


# --- the full run ----------------------------------------------------------------------------------

def test_full_run_push_cache_parse_profile_parity_cleanup(lab, models, fake_tool):
    dev = lab.add("pixel", model="Pixel 7")
    images = np.random.default_rng(1).standard_normal((3, 3, 16, 16)).astype(np.float32)
    [first] = phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool,
                                op_profile=True, parity_inputs=images, runs=5, warmup=1,
                                timeout_s=60, adb=lab.adb)
    # parsed from the real-format output of a real (host) run
    assert first.benchmark.tool == "classic" and first.benchmark.inference.count == 5
    assert 0 < first.benchmark.inference.min_ms <= first.benchmark.avg_ms <= first.benchmark.inference.max_ms
    assert first.benchmark.overall_memory_mb == 9.5
    # device state and pinning from the gs201 profile
    assert (first.device.model, first.device.android_version, first.device.board_platform) == ("Pixel 7", "14", "gs201")
    assert (first.device.battery_level, first.device.thermal_status) == (87, 0)
    assert first.cpu_mask == "c0" and first.threads == 2
    assert (dev.sandbox / "taskset.log").read_text().split() == ["c0"] * 4   # 1 bench + 3 parity
    # the 7x7 depthwise is flagged (IGEMM), the 3x3 (DWConv) is not
    assert [(s.kernel, s.layer.startswith("blocks.1.0.conv_dw")) for s in first.slow_depthwise] == [((7, 7), True)]
    # parity: device outputs pulled and compared with host LiteRT on the same inputs
    assert first.parity.count == 3 and first.parity.top1_agreement == 1.0
    assert first.parity.cosine_min > 0.9999 and first.parity.max_abs_err < 1e-4
    diff = first.parity.output_difference
    assert (diff.dtype, diff.values) == ("float32", 30)
    if TWIN_MISSING is None:        # the phone's outputs came from ARM kernels: float rounding differs
        assert diff.differing > 0 and first.parity.max_abs_err > 0
        assert [json.loads(line)["machine"] for line in (dev.sandbox / "twin.log").read_text().splitlines()] == ["aarch64"] * 3
    else:                           # host LiteRT stood in for the phone's kernels
        assert diff.differing == 0
    assert first.pushed == {fake_tool.name: True, models["fp32"].name: True}
    assert not list(dev.host_path(RUN_DIRS).glob("run-*"))
    # only the tool and the device script stay on the phone, under their hashes; the model went with the run folder
    cached = sorted(p.name.split("-", 1)[1] for p in dev.host_path(RUN_DIRS + "/cache").iterdir())
    assert cached == sorted([fake_tool.name, SCRIPT])
    assert model_files(dev) == []

    [second] = phone.bench_phone(models["fp32"], device=dev.address, benchmark_binary=fake_tool,
                                 runs=3, warmup=1, timeout_s=60, adb=lab.adb)
    assert second.pushed == {fake_tool.name: False, models["fp32"].name: True}
    assert any(c.startswith("sha256sum /data/local/tmp/mixdeploy/cache/") for c in dev.commands)  # hash-checked hit
    assert second.benchmark.inference.count == 3
    assert not list(dev.host_path(RUN_DIRS).glob("run-*")) and model_files(dev) == []


def test_int8_parity_feeds_quantized_bytes_and_dequantizes(lab, models, fake_tool):
    dev = lab.add("phone", model="Phone X", props={"ro.board.platform": "unknown-soc"})
    images = np.random.default_rng(2).standard_normal((2, 3, 16, 16)).astype(np.float32)
    [result] = phone.bench_phone(models["int8"], device="phone x", benchmark_binary=fake_tool,
                                 parity_inputs=images, runs=2, warmup=1, timeout_s=60, adb=lab.adb)
    assert result.parity.top1_agreement == 1.0 and result.parity.max_abs_err < 1e-6
    # no profile for this SoC: its big cores from cpuinfo_max_freq (the stand-in's are a Pixel 7's: 6-7)
    assert result.cpu_mask == "c0" and result.threads == 2 and result.online_cpus == list(range(8))
    assert any("no device profile" in n and "fastest online cores 6-7, 2.85 GHz" in n for n in result.notes)
    assert set((dev.sandbox / "taskset.log").read_text().split()) == {"c0"}


def test_int8_input_bytes_are_the_image_quantized_with_the_input_scale(models):
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(models["int8"])).get_input_details()[0]
    scale, zero_point = details["quantization"]
    images = np.random.default_rng(3).uniform(-1.5, 1.5, (2, 3, 16, 16)).astype(np.float32)
    tensors = phone.prepare_parity_inputs(images, details)
    assert [t.shape for t in tensors] == [(1, 16, 16, 3)] * 2 and tensors[0].dtype == np.int8
    for image, tensor in zip(images, tensors):
        restored = (tensor[0].astype(np.float32) - zero_point) * scale     # NHWC
        in_range = np.abs(image.transpose(1, 2, 0)) < 127 * scale - abs(zero_point) * scale
        assert np.abs(restored - image.transpose(1, 2, 0))[in_range].max() <= scale / 2 + 1e-6


def test_parity_inputs_with_the_wrong_shape_are_refused(lab, models, fake_tool):
    dev = lab.add("pixel")
    with pytest.raises(MixdeployError, match=r"N x 3 x 16 x 16"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool,
                          parity_inputs=np.zeros((1, 3, 8, 8), np.float32), runs=1, adb=lab.adb)
    assert not list(dev.host_path(RUN_DIRS).glob("run-*"))


# --- faults -----------------------------------------------------------------------------------------

def test_no_device(lab, models, fake_tool):
    with pytest.raises(DeviceError, match="no Android device is attached"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, adb=lab.adb)


def test_unauthorized_device_is_explained(lab, models, fake_tool):
    lab.add("locked", auth="reject", wait_state="unauthorized")
    with pytest.raises(DeviceError, match=r"is unauthorized: unlock the phone and accept"):
        phone.bench_phone(models["fp32"], device=None, benchmark_binary=fake_tool, adb=lab.adb)


def test_offline_device_is_explained(lab, models, fake_tool):
    dev = lab.add("mute", handshake=False, wait_state="offline")
    with pytest.raises(DeviceError, match=rf"device {dev.address} is offline: .*re-plug"):
        phone.bench_phone(models["fp32"], device=dev.address, benchmark_binary=fake_tool, adb=lab.adb)


def test_nonzero_exit_shows_the_stderr_tail_and_cleans_up(lab, models, fake_tool):
    dev = lab.add("pixel")
    (dev.sandbox / "behaviour.json").write_text(json.dumps(
        {"exit_code": 7, "stderr": "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'\n"}))
    with pytest.raises(DeviceError, match=r"(?s)exit code 7.*Didn't find op for builtin opcode"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, adb=lab.adb)
    assert not list(dev.host_path(RUN_DIRS).glob("run-*"))


def test_device_gone_mid_run(lab, models, fake_tool):
    dev = lab.add("pixel", drop_on=BENCH_STEP)
    (dev.sandbox / "behaviour.json").write_text(json.dumps({"sleep_s": 20}))
    start = time.monotonic()
    with pytest.raises(DeviceError, match=rf"device {dev.address} (is no longer attached|is now offline)"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool,
                          timeout_s=30, adb=lab.adb)
    assert time.monotonic() - start < 15       # noticed the drop, did not wait for the timeout


def test_command_timeout_kills_and_cleans_up(lab, models, fake_tool):
    dev = lab.add("pixel")
    (dev.sandbox / "behaviour.json").write_text(json.dumps({"sleep_s": 30}))
    with pytest.raises(CommandTimeout, match=r"benchmark_model did not finish within 2 s .*killed"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool,
                          timeout_s=2, adb=lab.adb)
    assert not list(dev.host_path(RUN_DIRS).glob("run-*"))
    assert any(f"{SCRIPT} stop /data/local/tmp/mixdeploy/run-" in c for c in dev.commands)
    deadline = time.monotonic() + 5
    while dev._procs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not dev._procs                       # the stand-in process is dead, not orphaned


def test_a_phone_whose_sh_cannot_run_the_device_script_is_told_apart(lab, models, fake_tool):
    dev = lab.add("pixel")
    broken = dev.host_path("system/bin/sh")      # first on the phone's PATH: what `sh SCRIPT` runs
    broken.write_text('#!/bin/sh\necho "sh: syntax error: unexpected (" >&2\nexit 2\n')
    broken.chmod(0o755)
    with pytest.raises(DeviceError, match=r"(?s)answered 'sh: syntax error.*to --version.*rm -rf /data/local/tmp/mixdeploy"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, adb=lab.adb)
    assert run_dirs(dev) == []                   # refused before any run folder was made


def test_the_device_scripts_own_failure_is_explained(lab, models, fake_tool):
    """A cached binary that lost its exec bit (a hash hit checks content, not mode): the script's
    exit code 66, which the host turns into what to do, with the script's own line."""
    dev = lab.add("pixel")
    phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, warmup=1, adb=lab.adb)
    [cached] = dev.host_path(RUN_DIRS + "/cache").glob(f"*-{fake_tool.name}")
    cached.chmod(0o644)
    with pytest.raises(DeviceError, match=r"(?s)exit code 66: a file of the run is missing.*no executable benchmark binary"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, adb=lab.adb)
    assert run_dirs(dev) == []


def test_a_run_folder_whose_reaper_never_starts_is_explained_and_removed(lab, models, fake_tool):
    """`start` makes the folder, then waits for its detached reaper: a setsid that runs nothing
    makes the script give up (exit 69) with the folder already there; the host explains the code
    and still removes the folder."""
    dev = lab.add("pixel")
    setsid = dev.host_path("system/bin/setsid")  # first on the phone's PATH: starts nothing
    setsid.write_text("#!/bin/sh\nexit 0\n")
    setsid.chmod(0o755)
    with pytest.raises(DeviceError, match=r"(?s)could not start a run folder .*exit code 69: the phone lacks a tool"
                                          r".*reaper did not start within 10 s"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, adb=lab.adb)
    assert run_dirs(dev) == []


def test_a_packaged_script_of_another_version_is_refused(monkeypatch):
    from mixdeploy.bench import device_script

    monkeypatch.setattr(device_script, "SCRIPT_VERSION", "2")
    with pytest.raises(MixdeployError, match=r"says VERSION=1 but this mixdeploy speaks version 2: .*reinstall"):
        device_script.install(adb=None, serial="never-reached")


# --- configuration errors (no device needed) ------------------------------------------------------

def test_missing_benchmark_binary_says_where_to_get_it(tmp_path, monkeypatch, models):
    monkeypatch.delenv("MIXDEPLOY_BENCHMARK_MODEL", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(MixdeployError, match="android_aarch64_benchmark_model"):
        phone.resolve_benchmark_binary(None)
    config = tmp_path / ".config" / "mixdeploy" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'benchmark_binary = "{models["fp32"]}"\n')
    assert phone.resolve_benchmark_binary(None) == models["fp32"]
    monkeypatch.setenv("MIXDEPLOY_BENCHMARK_MODEL", str(tmp_path / "nope"))
    with pytest.raises(MixdeployError, match="from MIXDEPLOY_BENCHMARK_MODEL"):
        phone.resolve_benchmark_binary(None)


def test_adb_missing_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.delenv("MIXDEPLOY_ADB", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MixdeployError, match=r"apt-get install -y adb"):
        Adb()
    monkeypatch.setenv("MIXDEPLOY_ADB", str(tmp_path / "adb"))
    with pytest.raises(MixdeployError, match="MIXDEPLOY_ADB"):
        Adb()


def test_parse_devices_output_states():
    text = ("List of devices attached\n"
            "R58M123ABC             device usb:1-1 product:beyond1lte model:SM_G973F device:beyond1 transport_id:4\n"
            "emulator-5554          offline transport_id:2\n"
            "0123456789             no permissions (user in plugdev group; are your udev rules wrong?); see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:5\n"
            "ZY22ABCDEF             unauthorized usb:1-3 transport_id:6\n")
    states = [(d.serial, d.state, d.model) for d in parse_devices_output(text)]
    assert states == [("R58M123ABC", "device", "SM_G973F"), ("emulator-5554", "offline", None),
                      ("0123456789", "no permissions", None), ("ZY22ABCDEF", "unauthorized", None)]


# --- the CLI ------------------------------------------------------------------------------------------

def test_cli_bench_on_the_emulated_phone_prints_json(lab, models, fake_tool, monkeypatch):
    from click.testing import CliRunner

    from cli import cli

    lab.add("pixel")
    for key in ("ANDROID_ADB_SERVER_PORT", "HOME"):
        monkeypatch.setenv(key, lab.env[key])
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "pixel",
                                      "--benchmark-binary", str(fake_tool), "--runs", "3",
                                      "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    [entry] = payload["results"]
    assert entry["device"]["model"] == "Pixel 7" and entry["benchmark"]["inference"]["count"] == 3

    lab.devices[0].drop()
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "pixel",
                                      "--benchmark-binary", str(fake_tool)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Error:" in result.output


@pytest.mark.skipif(shutil.which("adb") is None, reason="adb not on PATH")
def test_adbutils_bundled_adb_also_works(tmp_path, monkeypatch):
    """The newer adb (36) bundled in the adbutils wheel talks to the same emulated device."""
    adbutils = pytest.importorskip("adbutils")
    bundled = Path(adbutils.__file__).parent / "binaries" / "adb"
    if not os.access(bundled, os.X_OK):
        pytest.skip("adbutils has no bundled adb here")
    lab = AdbLab(tmp_path, str(bundled))
    try:
        dev = lab.add("pixel")
        assert lab.adb.shell(dev.address, "getprop ro.product.model; exit 4").exit_code == 4
        assert lab.adb.getprop(dev.address, "ro.product.model") == "Pixel 7"
    finally:
        lab.close()


def test_ctrl_c_during_the_run_still_removes_the_run_folder(lab, models, fake_tool, monkeypatch):
    dev = lab.add("pixel")

    def interrupted(text):
        raise KeyboardInterrupt

    monkeypatch.setattr(phone, "parse_benchmark_output", interrupted)
    with pytest.raises(KeyboardInterrupt):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, adb=lab.adb)
    assert any(f"{SCRIPT} clean /data/local/tmp/mixdeploy/run-" in c for c in dev.commands)
    assert not list(dev.host_path(RUN_DIRS).glob("run-*"))


@needs_twin
def test_on_device_parity_carries_the_arm_kernels_int8_rounding(lab, fake_tool, trained_int8_64px, trained_model):
    """A MixNet int8 model on the emulated phone: its outputs come from ARM kernels (the twin), so
    parity with the host is close but not exact, as on a real phone."""
    from mixdeploy.data import load_images

    dev = lab.add("pixel", arm64_cpu="cortex-a76")
    # The ARM kernels' int8 logits equal x86's for most inputs (trained_int8_64px says how many
    # differ): look through 256 for those that do not.
    images = load_images("fashion-mnist", trained_model.preprocessing.with_size(64), limit=256).images
    # Inputs whose int8 logits the twin, run on its own, finds off the host's, and two it does not.
    alone = twin.compare_with_host(trained_int8_64px, images)
    off_host = np.any(alone.run.raw_outputs[0] != alone.host_raw, axis=1)
    off, same = np.flatnonzero(off_host)[:3], np.flatnonzero(~off_host)[:2]
    assert len(same) == 2
    # On some x86 hosts (an Intel Xeon with AVX-512 VNNI, measured) XNNPACK's kernels round like
    # the ARM ones on all 256: then the phone path must report no difference, and still the twin's.
    picked = np.concatenate([off, same]) if len(off) else np.flatnonzero(~off_host)[:5]
    [result] = phone.bench_phone(trained_int8_64px, device="pixel", benchmark_binary=fake_tool,
                                 parity_inputs=images[picked], runs=1, warmup=1, timeout_s=300, adb=lab.adb)
    facts = [json.loads(line) for line in (dev.sandbox / "twin.log").read_text().splitlines()]
    assert [(f["machine"], f["cpu_model"].split()[0]) for f in facts] == [("aarch64", "Cortex-A76")] * len(picked)
    diff = result.parity.output_difference
    assert diff.dtype == "int8" and diff.values == 10 * len(picked)
    assert diff.differing >= len(off) and (diff.max_steps >= 1 if len(off) else diff.differing == 0)
    # (no cosine bound: with the default recipe the one input that differs at 64 px differs by up
    # to 17 steps, a top-1 flip, on the twin alone as much as through the phone path)
    # The phone path reports exactly what the twin computes for those inputs.
    out = phone.io_details(trained_int8_64px)[2][0]
    assert result.parity == phone.compare_outputs(alone.host_raw[picked], alone.run.raw_outputs[0][picked], out)


@pytest.mark.slow
def test_real_mixnet_s_export_through_the_emulated_phone(lab, fake_tool, tmp_path):
    """A real MixNet-S int8 export (64 px): serving_default_input:0 name, MixNet layer mapping."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "host_latency", Path(__file__).parents[1] / "benchmarks" / "host_latency.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = script.export_if_needed("mixnet-s", tmp_path / "mixnet-s", 64, 4, "split")
    lab.add("pixel")
    images = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    [result] = phone.bench_phone(folder / "model_int8.tflite", device="pixel", benchmark_binary=fake_tool,
                                 op_profile=True, parity_inputs=images, runs=2, warmup=1, timeout_s=120,
                                 adb=lab.adb)
    assert result.parity.top1_agreement == 1.0
    slow = {(s.layer, s.kernel) for s in result.slow_depthwise}
    assert ("blocks.4.1.conv_dw.3", (9, 9)) in slow
    assert all(k[0] > 5 for _, k in slow)


def test_cli_human_output_with_op_profile_and_fashion_mnist_parity(lab, models, fake_tool, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from cli import cli

    lab.add("pixel")
    lab.add("galaxy", model="SM-S911B", props={"ro.board.platform": "kalama", "ro.soc.model": "SM8550"})
    for key in ("ANDROID_ADB_SERVER_PORT", "HOME"):
        monkeypatch.setenv(key, lab.env[key])
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "all", "--json"])
    assert result.exit_code == 2 and "--benchmark-binary" in result.output     # no tool configured
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "all", "--json",
                                      "--benchmark-binary", str(fake_tool), "--runs", "2"])
    per_device = sorted((r["device"]["soc"], r["cpu_mask"]) for r in json.loads(result.stdout)["results"])
    assert per_device == [("GS201", "c0"), ("SM8550", "f8")]       # each phone pinned by its profile
    result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "all", "--benchmark-binary",
                                      str(fake_tool), "--runs", "2", "--op-profile", "--parity",
                                      "--parity-data", "fashion-mnist", "--parity-count", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Pixel 7 (" in out and "SM-S911B (" in out
    assert re.search(r"\[[^\]\n]+\]:\d+", out)           # `[tensor]:N` names printed, not eaten as markup
    assert "Delegate/Convolution (NHWC," in out and "TfLiteXNNPackDelegate" in out   # the real rows
    assert out.count("on-device parity vs host LiteRT (3 inputs): top-1 agreement 1.000") == 2
    assert "slow depthwise" in out and "7x7 ran as Convolution (NHWC, F32) IGEMM" in out
    np.save(tmp_path / "bad.npy", np.zeros((2, 16, 16), np.float32))
    bad = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "pixel", "--benchmark-binary",
                                   str(fake_tool), "--parity", "--parity-data", str(tmp_path / "bad.npy")])
    assert bad.exit_code == 2 and "N x C x H x W float32" in bad.output


# --- pinning from what the phone says now -----------------------------------------------------------

def test_pixel_with_only_two_cpus_online_is_pinned_to_them_and_left_clean(lab, models, fake_tool, monkeypatch):
    """Its profile's big cores (6-7) are offline: the old fixed mask fails on this phone, the run
    pins to what is online instead and says so; nothing of the run stays on the phone."""
    from click.testing import CliRunner

    from cli import cli

    dev = lab.add("pixel", model="Pixel 7", online="0-1")
    old_way = lab.adb.shell(dev.address, "taskset c0 true")
    assert old_way.exit_code == 1 and "failed to set pid's affinity: Invalid argument" in old_way.stderr
    for key in ("ANDROID_ADB_SERVER_PORT", "HOME"):
        monkeypatch.setenv(key, lab.env[key])
    result = CliRunner().invoke(cli, ["bench", str(models["int8"]), "--device", "pixel", "--benchmark-binary",
                                      str(fake_tool), "--runs", "3", "--json"])
    assert result.exit_code == 0, result.output
    [entry] = json.loads(result.stdout)["results"]
    assert entry["cpu_mask"] == "3" and entry["online_cpus"] == [0, 1] and entry["threads"] == 2
    assert any("big cores 6-7 are all offline now (online: 0-1)" in n and "fastest online cores 0-1, 1.80 GHz" in n
               for n in entry["notes"])
    assert (dev.sandbox / "taskset.log").read_text().split() == ["c0", "3"]   # the probe above, then the run
    assert entry["benchmark"]["inference"]["count"] == 3
    assert model_files(dev) == [] and run_dirs(dev) == []


def test_some_big_cores_offline_pins_to_the_rest(lab, models, fake_tool):
    lab.add("pixel", model="Pixel 7", online="0-6")
    [result] = phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, warmup=1,
                                 timeout_s=60, adb=lab.adb)
    assert result.cpu_mask == "40" and result.threads == 1      # cpu6 only: the profile's 2 threads capped
    assert any("7 offline now" in n and "pinned to 6" in n for n in result.notes)


def test_pinning_rules_from_the_facts():
    from mixdeploy.bench.cpus import (
        CpuFacts,
        choose_pinning,
        cpu_mask,
        format_cpus,
        mask_cpus,
        parse_cpu_list,
    )

    assert parse_cpu_list("0-3,6\n") == [0, 1, 2, 3, 6] and format_cpus([0, 1, 2, 3, 6]) == "0-3,6"
    assert cpu_mask([6, 7]) == "c0" and mask_cpus("1f0") == [4, 5, 6, 7, 8]
    pixel = {"big_cores_mask": "c0", "threads": 2}
    freqs = dict(enumerate([1803000] * 4 + [2348000] * 2 + [2850000] * 2))
    assert choose_pinning(pixel, CpuFacts(list(range(8)), freqs), "p").cpus == [6, 7]
    assert choose_pinning(pixel, CpuFacts([0, 1, 2, 3, 4, 5], freqs), "p").cpus == [4, 5]   # A78s: fastest left
    assert choose_pinning(None, CpuFacts([0, 1, 2, 3], {}), "p").cpus is None               # nothing to go by
    assert choose_pinning(pixel, None, "p").cpus == [6, 7]                                  # /sys unreadable


# --- a clean phone ------------------------------------------------------------------------------------

def test_keep_on_device_caches_models_within_the_bound_oldest_out(lab, models, fake_tool):
    dev = lab.add("pixel")
    cache = dev.host_path(RUN_DIRS + "/cache")
    cache.mkdir(parents=True)
    stale = cache / "0123456789abcdef-someone_elses.tflite"
    stale.write_bytes(b"\0" * (3 << 19))          # 1.5 MB, last used long ago
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    [first] = phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, warmup=1,
                                timeout_s=60, adb=lab.adb, keep_on_device=True, device_cache_mb=1)
    assert not stale.exists() and any("removed 1 least recently used" in n for n in first.notes)
    kept = sorted(p.name.split("-", 1)[1] for p in cache.iterdir())
    assert kept == sorted([fake_tool.name, SCRIPT, models["fp32"].name])
    [second] = phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, runs=1, warmup=1,
                                 timeout_s=60, adb=lab.adb, keep_on_device=True, device_cache_mb=1)
    assert second.pushed == {fake_tool.name: False, models["fp32"].name: False}
    assert run_dirs(dev) == []


def wait_until_clean(dev: EmulatedDevice, seconds: float) -> float:
    """Poll the phone's files until no run folder and no model is left; the seconds it took."""
    start = time.monotonic()
    while (run_dirs(dev) or model_files(dev)) and time.monotonic() - start < seconds:
        time.sleep(0.25)
    return time.monotonic() - start


def test_a_phone_that_drops_mid_run_is_cleaned_by_its_reaper(lab, models, fake_tool):
    dev = lab.add("pixel", drop_on=BENCH_STEP)
    (dev.sandbox / "behaviour.json").write_text(json.dumps({"sleep_s": 20}))
    with pytest.raises(DeviceError, match="went away"):
        phone.bench_phone(models["fp32"], device="pixel", benchmark_binary=fake_tool, timeout_s=4, adb=lab.adb)
    assert len(run_dirs(dev)) == 1 and model_files(dev)      # the host could not clean up...
    waited = wait_until_clean(dev, 20)
    assert run_dirs(dev) == [] and model_files(dev) == []    # ...the phone's reaper did, once stale
    assert waited > 1                                        # not before the stale time (4 s + margin)


# --- a fleet --------------------------------------------------------------------------------------------

def test_fleet_of_two_servers_one_phone_dropping(tmp_path, models, fake_tool, monkeypatch):
    """Two phones behind two private adb servers; the first drops mid-run. Both are reported,
    the exit code says one failed, the healthy result is whole, and both phones end clean."""
    from click.testing import CliRunner

    from cli import cli

    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    labs = [AdbLab(tmp_path / "a", ADB_CANDIDATES[0]), AdbLab(tmp_path / "b", ADB_CANDIDATES[0])]
    try:
        dropping = labs[0].add("lab-a", model="Pixel 7", drop_on=BENCH_STEP, drop_after_s=3)
        (dropping.sandbox / "behaviour.json").write_text(json.dumps({"sleep_s": 20}))
        healthy = labs[1].add("lab-b", model="Pixel 8", props={"ro.board.platform": "zuma"},
                              cpus=(1704000,) * 4 + (2367000,) * 4 + (2910000,))   # Tensor G3-like: 9 cores
        servers = [f"127.0.0.1:{lab.env['ANDROID_ADB_SERVER_PORT']}" for lab in labs]
        monkeypatch.setenv("HOME", labs[0].env["HOME"])
        result = CliRunner().invoke(cli, ["bench", str(models["fp32"]), "--device", "all", "--adb-server", servers[0],
                                          "--adb-server", servers[1], "--benchmark-binary", str(fake_tool),
                                          "--runs", "3", "--timeout", "6", "--json"])
        assert result.exit_code == 1, result.output
        payload = json.loads(result.stdout)
        [ok] = payload["results"]
        [bad] = payload["failures"]
        assert (ok["server"], ok["device"]["serial"], ok["device"]["model"]) == (servers[1], healthy.address, "Pixel 8")
        assert ok["benchmark"]["inference"]["count"] == 3 and ok["cpu_mask"] == "1f0"
        assert (bad["server"], bad["serial"], bad["failed"]) == (servers[0], dropping.address, True)
        assert "went away" in bad["error"]
        # both phones ran at once: the healthy one started its benchmark before the other dropped
        [healthy_start] = [t for t, c in healthy.started if BENCH_STEP in c]
        assert healthy_start < dropping.dropped_at
        assert model_files(healthy) == [] and run_dirs(healthy) == []
        wait_until_clean(dropping, 25)
        assert model_files(dropping) == [] and run_dirs(dropping) == []
    finally:
        for lab in labs:
            lab.close()
