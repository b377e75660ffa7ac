"""The host side of the device script, android_bench/device/mixdeploy_bench.sh.

Everything a benchmark runs on the phone is that one POSIX-sh script: the run folder and its
stale-run reaper, pinning with taskset, the benchmark_model invocations, stopping a tool and
the clean-up. This module finds it in the installed package (importlib.resources: it is
package data of `android_bench`), pushes it into the phone's cache under its sha256 like the
benchmark binary, checks its version there, and builds its command lines (arguments, quoted;
no shell logic lives here).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

from mixdeploy.bench import device_files
from mixdeploy.bench.adb import Adb
from mixdeploy.errors import DeviceError, MixdeployError

SCRIPT_PACKAGE = "android_bench"
SCRIPT_RESOURCE = "device/mixdeploy_bench.sh"
# The arguments, exit codes and run-folder files this module expects; the script's VERSION=
# line must say the same (bump both together, android_bench/README.md).
SCRIPT_VERSION = "1"
DELEGATES = ("xnnpack", "cpu", "gpu", "nnapi")
# The script's own failures; any other code is the tool's (benchmark_model, taskset).
SCRIPT_EXIT_CODES = {
    64: "the device script was given bad arguments: a mixdeploy bug, please report it with --debug output",
    66: "a file of the run is missing on the phone (its folder removed by the reaper, or the cache cleared "
        "mid-run): run again",
    69: "the phone lacks a tool the device script needs (taskset, setsid from toybox): this Android build "
        "cannot run mixdeploy's benchmark",
    73: "the run folder could not be made under /data/local/tmp: check the phone has free space",
}


@contextlib.contextmanager
def local_script() -> Iterator[Path]:
    """The script as a file on the host (it is a real file unless the package is zipped)."""
    try:
        resource = resources.files(SCRIPT_PACKAGE).joinpath(SCRIPT_RESOURCE)
    except ModuleNotFoundError as err:    # an editable install made before android_bench was a package
        raise MixdeployError(f"the device script's package {SCRIPT_PACKAGE} is not installed: reinstall "
                             f"mixdeploy (bash scripts/setup.sh, or pip install -e . in the checkout)") from err
    with resources.as_file(resource) as path:
        yield path


def script_version(text: str) -> str | None:
    """The value of the script's `VERSION=` line."""
    found = re.search(r"^VERSION=(\S+)\s*$", text, re.M)
    return found.group(1) if found else None


def version_line(version: str = SCRIPT_VERSION) -> str:
    """What `sh SCRIPT --version` prints."""
    return f"mixdeploy_bench.sh {version}"


@dataclass(frozen=True)
class DeviceScript:
    """The script as pushed to one phone."""

    adb: Adb
    serial: str
    remote: str          # its path in the phone's cache

    def command(self, action: str, *args: object) -> str:
        return " ".join(["sh", shlex.quote(self.remote), action, *(shlex.quote(str(a)) for a in args)])

    def start(self, run_dir: str, stale_after_s: float) -> None:
        """Make the run folder with its reaper, which removes it (and kills its tool) once the
        host has not touched it for `stale_after_s`."""
        result = self.adb.shell(self.serial, self.command("start", run_dir, int(stale_after_s)), timeout=30)
        if not result.ok:
            self.adb.raise_if_gone(self.serial)
            meaning = exit_code_meaning(result.exit_code) or "see its output"
            raise DeviceError(f"the device script could not start a run folder on {self.serial} (exit code "
                              f"{result.exit_code}: {meaning}): "
                              f"{(result.stderr or result.stdout).strip() or '(no output)'}")

    def touch(self, run_dir: str) -> None:
        """The host is still there: before a step that runs no script action (a push)."""
        self.adb.shell(self.serial, self.command("touch", run_dir), timeout=30)

    def stop(self, run_dir: str) -> None:
        """Kill the tool the run waits on (after a timeout; best effort)."""
        try:
            self.adb.shell(self.serial, self.command("stop", run_dir), timeout=15)
        except DeviceError:
            pass

    def clean(self, run_dir: str) -> None:
        """Stop the run's tool and remove its folder. Best effort: a phone that went away keeps
        the folder until its reaper removes it."""
        try:
            self.adb.shell(self.serial, self.command("clean", run_dir), timeout=30)
        except DeviceError:
            pass

    def bench_command(self, run_dir: str, binary: str, model: str, *, threads: int, delegate: str, runs: int,
                      warmup: int, cpu_mask: str | None, op_profile: bool) -> str:
        return self.command("bench", run_dir, binary, model, *_tool_options(threads, delegate, cpu_mask),
                            "--runs", runs, "--warmup", warmup, *(["--op-profile"] if op_profile else []))

    def parity_command(self, run_dir: str, binary: str, model: str, inputs: list[str], *, input_layer: str,
                       input_shape: list[int], threads: int, delegate: str, cpu_mask: str | None) -> str:
        """One run per input file; the outputs land in `<input>.out` (output_path)."""
        return self.command("parity", run_dir, binary, model, *_tool_options(threads, delegate, cpu_mask),
                            "--input-layer", input_layer, "--input-shape", ",".join(str(int(d)) for d in input_shape),
                            *inputs)


def output_path(input_path: str) -> str:
    """Where the script's `parity` writes the raw outputs of one input file."""
    return f"{input_path}.out"


def _tool_options(threads: int, delegate: str, cpu_mask: str | None) -> list[object]:
    return ["--threads", threads, "--delegate", delegate, *(["--cpu-mask", cpu_mask] if cpu_mask else [])]


def install(adb: Adb, serial: str) -> DeviceScript:
    """Push the script (skipped when the phone's cache has this exact file) and check that the
    phone's shell runs it and that it speaks this module's version."""
    with local_script() as path:
        shipped = script_version(path.read_text())
        if shipped != SCRIPT_VERSION:
            raise MixdeployError(
                f"the device script {path} says VERSION={shipped} but this mixdeploy speaks version "
                f"{SCRIPT_VERSION}: the script and the code come from different releases; reinstall mixdeploy "
                f"(bash scripts/setup.sh, or pip install --force-reinstall the same wheel)")
        remote, _ = device_files.push_cached(adb, serial, path)
    script = DeviceScript(adb, serial, remote)
    answer = adb.shell(serial, script.command("--version"), timeout=30)
    if answer.stdout.strip() != version_line():
        adb.raise_if_gone(serial)
        said = (answer.stdout + answer.stderr).strip() or f"nothing (exit code {answer.exit_code})"
        raise DeviceError(f"the device script on {serial} ({remote}) answered {said!r} to --version, not "
                          f"{version_line()!r}: its copy there is damaged or the phone's sh cannot run it. Remove "
                          f"mixdeploy's files from the phone (adb -s {serial} shell rm -rf {device_files.DEVICE_ROOT}) "
                          f"and run again")
    return script


def exit_code_meaning(code: int) -> str | None:
    """What a non-zero exit code of a script action says, when it is the script's own."""
    return SCRIPT_EXIT_CODES.get(code)
