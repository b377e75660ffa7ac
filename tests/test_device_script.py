"""The device script (android_bench/device/mixdeploy_bench.sh) run directly, no adb.

Under each POSIX shell here (dash always; busybox sh and mksh, Android's shell, when installed:
`bash scripts/setup.sh test` installs them), with a PATH that holds only the tools Android's
toybox has and the script uses, the shell under test as `sh` (as on a phone, where the script's
own `sh -c` and reaper are mksh too), and a stand-in benchmark binary that records its
arguments, its pid and its folder. The emulated phone of test_bench_phone.py runs the same
script end to end; here each argument, exit code and file of the script is checked on its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mixdeploy.bench import device_script

SCRIPT = Path(__file__).resolve().parents[1] / "android_bench" / "device" / "mixdeploy_bench.sh"
# What the script may call besides shell builtins: all of them toybox commands on Android.
DEVICE_TOOLS = ("mkdir", "touch", "rm", "cat", "stat", "date", "sleep", "setsid")
SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"], "mksh": ["mksh"]}

# The stand-in benchmark_model: logs `pid=`, `cwd=` and one `arg=` line per argument, then as
# $FAKE_SLEEP / $FAKE_EXIT say; with --output_filepath it writes "output of <value files spec>".
FAKE_TOOL = r"""#!/bin/sh
{ echo "pid=$$"; echo "cwd=$(pwd)"; for a in "$@"; do echo "arg=$a"; done; echo "end"; } >> "$FAKE_LOG"
echo "INFO: fake benchmark_model ran"
for a in "$@"; do
  case $a in
    --output_filepath=*) out=${a#*=} ;;
    --input_layer_value_files=*) spec=${a#*=} ;;
  esac
done
[ -n "$FAKE_SLEEP" ] && sleep "$FAKE_SLEEP"
[ -n "$out" ] && printf 'output of %s' "$spec" > "$out"
echo "stderr of the tool" >&2
exit "${FAKE_EXIT:-0}"
"""
# Android's taskset takes a hex mask; the stand-in logs it and runs the command unpinned.
FAKE_TASKSET = '#!/bin/sh\necho "taskset=$1" >> "$FAKE_LOG"\nshift\nexec "$@"\n'


def _available(name: str) -> bool:
    return shutil.which(SHELLS[name][0]) is not None


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.skipif(not _available(name), reason=f"{name} not installed"))
                        for name in SHELLS])
def phone(request, tmp_path):
    """A folder standing in for /data/local/tmp, a toybox-sized PATH, the stand-in tools."""
    shell = [shutil.which(SHELLS[request.param][0]), *SHELLS[request.param][1:]]   # PATH below has no shells
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in DEVICE_TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "sh").symlink_to(shell[0])   # busybox runs as `sh` by its argv[0]
    tool = tmp_path / "benchmark_model"
    tool.write_text(FAKE_TOOL)
    tool.chmod(0o755)
    model = tmp_path / "model.tflite"
    model.write_bytes(b"TFL3")
    env = {"PATH": str(bin_dir), "FAKE_LOG": str(tmp_path / "tool.log"), "HOME": str(tmp_path)}
    lab = Phone(shell, bin_dir, tool, model, tmp_path / "run-1", env)
    yield lab
    shutil.rmtree(lab.run_dir, ignore_errors=True)     # a reaper left running stops within its tick
    for pid in lab.tool_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Phone:
    def __init__(self, shell, bin_dir, tool, model, run_dir, env):
        self.shell, self.bin_dir, self.tool, self.model, self.run_dir, self.env = shell, bin_dir, tool, model, run_dir, env

    def run(self, *args, timeout=30, **env) -> subprocess.CompletedProcess:
        return subprocess.run([*self.shell, str(SCRIPT), *map(str, args)], env={**self.env, **env}, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def spawn(self, *args, **env) -> subprocess.Popen:
        return subprocess.Popen([*self.shell, str(SCRIPT), *map(str, args)], env={**self.env, **env}, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def with_taskset(self) -> None:
        taskset = self.bin_dir / "taskset"
        taskset.write_text(FAKE_TASKSET)
        taskset.chmod(0o755)

    def log(self) -> list[str]:
        path = Path(self.env["FAKE_LOG"])
        return path.read_text().splitlines() if path.exists() else []

    def tool_runs(self) -> list[dict]:
        """One dict per tool run: pid, cwd, args (and the taskset mask it went through, if any)."""
        runs, current = [], {"args": []}
        for line in self.log():
            key, _, value = line.partition("=")
            if line == "end":
                runs.append(current)
                current = {"args": []}
            elif key == "arg":
                current["args"].append(value)
            else:
                current[key] = value
        return runs

    def tool_pids(self) -> list[int]:
        return [int(run["pid"]) for run in self.tool_runs() if run.get("pid", "").isdigit()]

    def start(self, stale_s: int = 600) -> None:
        started = self.run("start", self.run_dir, stale_s)
        assert started.returncode == 0, started.stderr
        assert (self.run_dir / "alive").is_file()


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_script_and_the_host_speak_the_same_version(phone):
    out = phone.run("--version")
    assert out.returncode == 0 and out.stdout == device_script.version_line() + "\n"
    assert device_script.script_version(SCRIPT.read_text()) == device_script.SCRIPT_VERSION
    with device_script.local_script() as shipped:       # the host reads the same file (package data)
        assert shipped.read_bytes() == SCRIPT.read_bytes()


def test_bench_passes_every_argument_to_the_binary_unpinned(phone):
    phone.start()
    out = phone.run("bench", phone.run_dir, phone.tool, phone.model, "--threads", 3, "--delegate", "cpu",
                    "--runs", 7, "--warmup", 2, "--op-profile")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "INFO: fake benchmark_model ran\n"          # the tool's output, for the host to parse
    [run] = phone.tool_runs()
    assert run["args"] == [f"--graph={phone.model}", "--num_threads=3", "--num_runs=7", "--warmup_runs=2",
                           "--report_peak_memory_footprint=true", "--use_xnnpack=false", "--enable_op_profiling=true"]
    assert "taskset" not in run and Path(run["cwd"]) == phone.run_dir   # no mask: unpinned, in the run folder
    assert not (phone.run_dir / "pid").exists()                        # the pid file lives only while the tool runs


@pytest.mark.parametrize("delegate, flag", [("xnnpack", "--use_xnnpack=true"), ("gpu", "--use_gpu=true"),
                                            ("nnapi", "--use_nnapi=true")])
def test_each_delegate_is_its_benchmark_model_flag(phone, delegate, flag):
    phone.start()
    assert phone.run("bench", phone.run_dir, phone.tool, phone.model, "--delegate", delegate).returncode == 0
    [run] = phone.tool_runs()
    assert run["args"] == [f"--graph={phone.model}", "--num_threads=1", "--num_runs=50", "--warmup_runs=5",
                           "--report_peak_memory_footprint=true", flag]      # the defaults, and the delegate's flag


def test_a_cpu_mask_pins_through_taskset(phone):
    phone.with_taskset()
    phone.start()
    out = phone.run("bench", phone.run_dir, phone.tool, phone.model, "--threads", 2, "--cpu-mask", "c0")
    assert out.returncode == 0, out.stderr
    [run] = phone.tool_runs()
    assert run["taskset"] == "c0" and run["args"][:2] == [f"--graph={phone.model}", "--num_threads=2"]


def test_the_tools_exit_code_and_stderr_pass_through(phone):
    phone.start()
    out = phone.run("bench", phone.run_dir, phone.tool, phone.model, FAKE_EXIT="7")
    assert out.returncode == 7 and "stderr of the tool" in out.stderr
    assert not (phone.run_dir / "pid").exists()


@pytest.mark.parametrize("args, says", [
    (["bench"], "needs RUN_DIR BINARY MODEL"),
    (["frobnicate"], "unknown action 'frobnicate'"),
    ([], "unknown action ''"),
    (["bench", "{run}", "{tool}", "{model}", "--threads", "two"], "--threads takes a whole number, not 'two'"),
    (["bench", "{run}", "{tool}", "{model}", "--runs"], "--runs needs a value"),
    (["bench", "{run}", "{tool}", "{model}", "--delegate", "hexagon"], "unknown delegate 'hexagon'"),
    (["bench", "{run}", "{tool}", "{model}", "--cpu-mask", "0xc0"], "hex mask without 0x"),
    (["bench", "{run}", "{tool}", "{model}", "--turbo"], "unknown option --turbo"),
    (["bench", "{run}", "{tool}", "{model}", "{model}"], "bench takes no INPUT files"),
    (["parity", "{run}", "{tool}", "{model}", "--input-layer", "x", "--input-shape", "1"], "at least one INPUT"),
    (["parity", "{run}", "{tool}", "{model}", "{model}"], "needs --input-layer and --input-shape"),
    (["start", "{run}"], "start needs RUN_DIR STALE_S"),
    (["start", "{run}", "soon"], "STALE_S takes a whole number"),
])
def test_bad_arguments_exit_64_and_run_nothing(phone, args, says):
    phone.start()
    fill = {"run": phone.run_dir, "tool": phone.tool, "model": phone.model}
    out = phone.run(*(a.format(**fill) for a in args))
    assert out.returncode == 64 and says in out.stderr and out.stderr.startswith("mixdeploy_bench.sh: ")
    assert phone.tool_runs() == []


def test_missing_files_exit_66_and_a_missing_taskset_69(phone, tmp_path):
    phone.start()
    missing = tmp_path / "nothing-here"
    for args, says in [((phone.run_dir, missing, phone.model), "no executable benchmark binary"),
                       ((phone.run_dir, phone.model, phone.model), "no executable benchmark binary"),  # not executable
                       ((phone.run_dir, phone.tool, missing), "no model file"),
                       ((missing, phone.tool, phone.model), "run folder")]:
        out = phone.run("bench", *args)
        assert out.returncode == 66 and says in out.stderr, (args, out.stderr)
    out = phone.run("parity", phone.run_dir, phone.tool, phone.model, "--input-layer", "x", "--input-shape", "1",
                    missing)
    assert out.returncode == 66 and "no parity input file" in out.stderr
    out = phone.run("bench", phone.run_dir, phone.tool, phone.model, "--cpu-mask", "c0")   # no taskset on PATH
    assert out.returncode == 69 and "taskset is missing" in out.stderr
    assert phone.tool_runs() == []
    assert phone.run("touch", missing).returncode == 66


def test_a_run_folder_that_cannot_be_made_exits_73(phone, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = phone.run("start", tmp_path / "a-file" / "run-1", 60)
    assert out.returncode == 73 and "cannot make the run folder" in out.stderr


def test_parity_runs_once_per_input_and_escapes_colons_like_benchmark_model(phone, tmp_path):
    """Upstream's own case (benchmark_tflite_model_test.cc, SplitInputLayerNameAndValueFile):
    "input::0:/tmp/path" is input "input:0" and file "/tmp/path"; a ':' in the path doubles too."""
    phone.run_dir = tmp_path / "run:1"
    phone.start()
    inputs = [phone.run_dir / "input_0.bin", phone.run_dir / "input_1.bin"]
    for path in inputs:
        path.write_bytes(b"\0" * 8)
    out = phone.run("parity", phone.run_dir, phone.tool, phone.model, "--threads", 2, "--input-layer",
                    "serving_default_input:0", "--input-shape", "1,16,16,3", *inputs)
    assert out.returncode == 0, out.stderr
    assert out.stdout == ""                                # the tool's timings are not wanted here
    runs = phone.tool_runs()
    assert len(runs) == 2
    for run, path in zip(runs, inputs):
        spec = f"serving_default_input::0:{str(path).replace(':', '::')}"
        assert run["args"] == [f"--graph={phone.model}", "--num_threads=2", "--num_runs=1", "--warmup_runs=0",
                               "--report_peak_memory_footprint=true", "--use_xnnpack=true",
                               "--input_layer=serving_default_input:0", "--input_layer_shape=1,16,16,3",
                               f"--input_layer_value_files={spec}", f"--output_filepath={path}.out"]
        assert Path(device_script.output_path(str(path))).read_text() == f"output of {spec}"


def test_parity_stops_at_the_first_failing_input(phone):
    phone.start()
    inputs = [phone.run_dir / f"input_{i}.bin" for i in range(3)]
    for path in inputs:
        path.write_bytes(b"\0")
    out = phone.run("parity", phone.run_dir, phone.tool, phone.model, "--input-layer", "x", "--input-shape", "1",
                    *inputs, FAKE_EXIT="3")
    assert out.returncode == 3 and len(phone.tool_runs()) == 1


def test_stop_kills_exactly_the_running_tool_and_clean_removes_the_folder(phone):
    phone.start()
    running = phone.spawn("bench", phone.run_dir, phone.tool, phone.model, FAKE_SLEEP="30")
    assert wait_for(lambda: phone.tool_pids(), 10)
    [tool_pid] = phone.tool_pids()
    assert wait_for(lambda: (phone.run_dir / "pid").is_file(), 5)
    assert int((phone.run_dir / "pid").read_text()) == tool_pid    # the tool's own pid, not a shell's
    assert phone.run("stop", phone.run_dir).returncode == 0
    running.wait(timeout=10)
    assert running.returncode == 128 + signal.SIGKILL              # the script reports the killed tool
    assert not (phone.run_dir / "pid").exists() and phone.run_dir.is_dir()
    assert phone.run("clean", phone.run_dir).returncode == 0
    assert not phone.run_dir.exists()
    assert phone.run("clean", phone.run_dir).returncode == 0       # again: nothing to do, no error


def test_the_reaper_keeps_a_touched_folder_then_removes_a_stale_one_with_its_tool(phone):
    """Started detached: it outlives the start command's process group (the adb command), as a
    phone's must when the host goes away."""
    start = subprocess.Popen([*phone.shell, str(SCRIPT), "start", str(phone.run_dir), "1"], env=phone.env,
                             start_new_session=True, stdin=subprocess.DEVNULL)
    assert start.wait(timeout=10) == 0
    try:
        os.killpg(start.pid, signal.SIGKILL)      # what dies with an adb connection
    except ProcessLookupError:
        pass
    running = phone.spawn("bench", phone.run_dir, phone.tool, phone.model, FAKE_SLEEP="30")
    assert wait_for(lambda: phone.tool_pids(), 10)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:           # the host is there: touched more often than the stale time
        assert phone.run("touch", phone.run_dir).returncode == 0
        time.sleep(0.3)
    assert phone.run_dir.is_dir() and running.poll() is None
    assert wait_for(lambda: not phone.run_dir.exists(), 6)      # the host went quiet: removed...
    running.wait(timeout=5)
    assert running.returncode == 128 + signal.SIGKILL          # ...and its tool killed
