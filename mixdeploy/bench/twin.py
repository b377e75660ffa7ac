"""The ARM64 twin: a phone's CPU kernels on this machine, for on-device parity without a phone.

LiteRT's aarch64 build (the XNNPACK ARM code paths a phone runs) in a Debian arm64 python3.11
under qemu-user (`qemu-aarch64-static -cpu CPU -L ROOT`). android_bench/setup_arm64_twin.sh
builds it into $MIXDEPLOY_ARM64_TWIN (default ~/.cache/mixdeploy/arm64-twin) and writes
ready.json last; mixdeploy/bench/twin_infer.py (package data) is what runs inside.

A run: the host turns images into the model's exact input tensors (the bytes a phone gets,
phone.prepare_parity_inputs) -> one guest process runs them all -> raw outputs and facts from
inside (machine, MIDR_EL1 CPU model, HWCAP features, LiteRT version). The qemu CPU model sets
the features XNNPACK sees (dot product, fp16, i8mm, SVE) and so the kernels it picks.

It reports no latency: an emulator is no clock.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from mixdeploy import runtimes
from mixdeploy.bench import phone
from mixdeploy.atomic import scratch_dir
from mixdeploy.errors import DeviceError, MixdeployError
from mixdeploy.parity import BackendMetrics

TWIN_ENV = "MIXDEPLOY_ARM64_TWIN"
SETUP_COMMAND = "bash android_bench/setup_arm64_twin.sh"
QEMU = "qemu-aarch64-static"
# The big-core class of the phones in mixdeploy/bench/device_profiles.json (Tensor G1/G2: A76/A78
# and X1; Snapdragon 865/888: A77/A78): qemu's nearest model is cortex-a76.
DEFAULT_CPU = "cortex-a76"
GUEST_RESOURCE = "twin_infer.py"   # package data of mixdeploy.bench: what runs inside the twin


def guest_script():
    """Context manager giving the guest script as a real file (a zipped install gets a temporary copy)."""
    return resources.as_file(resources.files("mixdeploy.bench").joinpath(GUEST_RESOURCE))
NO_LATENCY = ("no latency is reported: the ARM64 twin is an emulator (qemu-user), and an emulator "
              "is no clock; bench on a phone (--device pixel|SERIAL) for latency")

# MIDR_EL1 (implementer, part number) -> name. qemu's `max` has implementer 0, part 0x051.
CPU_NAMES = {(0x41, 0xD03): "Cortex-A53", (0x41, 0xD04): "Cortex-A35", (0x41, 0xD07): "Cortex-A57",
             (0x41, 0xD08): "Cortex-A72", (0x41, 0xD0B): "Cortex-A76", (0x41, 0xD0C): "Neoverse-N1",
             (0x46, 0x001): "A64FX", (0x00, 0x051): "qemu max"}
# HWCAP / HWCAP2 bits (Linux arch/arm64/include/uapi/asm/hwcap.h) that decide XNNPACK's kernels.
HWCAP_FEATURES = {10: "fp16", 20: "dotprod", 22: "sve", 23: "fhm"}
HWCAP2_FEATURES = {1: "sve2", 13: "i8mm", 14: "bf16", 23: "sme"}


# --- where the twin is --------------------------------------------------------------------------

def twin_dir() -> Path:
    return Path(os.environ.get(TWIN_ENV) or Path.home() / ".cache" / "mixdeploy" / "arm64-twin").expanduser()


@dataclass(frozen=True)
class Twin:
    path: Path
    qemu: str
    ready: dict            # ready.json: what was built (recipe, versions, the smoke run's facts)

    def command(self, cpu: str, args: list[str]) -> list[str]:
        # -S: no site module, so no site-packages of the host leak in; -B: never write .pyc
        # files (under -L a path missing from the root is the host's own).
        return [self.qemu, "-cpu", cpu, "-L", str(self.path / "root"),
                str(self.path / "root" / "usr" / "bin" / "python3.11"), "-S", "-B", *args]

    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(self.path / "site"), "PYTHONNOUSERSITE": "1",
                "LANG": "C.UTF-8"}


def find_twin() -> Twin:
    """The ready twin, or a MixdeployError that says how to set it up."""
    path = twin_dir()
    qemu = shutil.which(QEMU)
    if qemu is None:
        raise MixdeployError(f"{QEMU} is not installed, so the ARM64 twin cannot run: run `{SETUP_COMMAND}` "
                             f"(it apt-installs qemu-user-static and builds the twin)")
    ready = path / "ready.json"
    if not ready.is_file():
        raise MixdeployError(f"the ARM64 twin is not set up in {path} (no ready.json there): run "
                             f"`{SETUP_COMMAND}` (about a minute, needs network to Debian and PyPI), "
                             f"or set {TWIN_ENV} to the folder it built")
    try:
        facts = json.loads(ready.read_text())
    except ValueError as err:
        raise MixdeployError(f"{ready} is not valid JSON ({err}): run `{SETUP_COMMAND}` again") from None
    return Twin(path=path, qemu=qemu, ready=facts)


def missing_reason() -> str | None:
    """Why the twin cannot run here (for a test's skip), or None when it can."""
    try:
        find_twin()
    except MixdeployError as err:
        return str(err)
    return None


def parse_device(spec: str | None) -> str | None:
    """`arm64` -> the default CPU, `arm64:max` -> `max`; None when `spec` names no twin."""
    if not spec or not (spec.lower() == "arm64" or spec.lower().startswith("arm64:")):
        return None
    cpu = spec.partition(":")[2].strip().lower()
    return cpu or DEFAULT_CPU


@functools.lru_cache(maxsize=4)
def available_cpus(qemu: str) -> tuple[str, ...]:
    out = subprocess.run([qemu, "-cpu", "help"], check=False, capture_output=True, text=True, timeout=30).stdout
    return tuple(line.split()[0] for line in out.splitlines()[1:] if line.strip())


def check_cpu(twin: Twin, cpu: str) -> None:
    cpus = available_cpus(twin.qemu)
    if cpus and cpu not in cpus:
        raise MixdeployError(f"qemu has no CPU model {cpu!r}: use --device arm64:NAME with one of "
                             f"{', '.join(cpus)} (default {DEFAULT_CPU})")


def describe_cpu(facts: dict) -> dict:
    """Name the CPU and its kernel-relevant features from the raw MIDR_EL1 / HWCAP values."""
    midr, hwcap, hwcap2 = facts.get("midr"), facts.get("hwcap") or 0, facts.get("hwcap2") or 0
    name = None
    if midr is not None:
        key = ((midr >> 24) & 0xFF, (midr >> 4) & 0xFFF)
        name = CPU_NAMES.get(key, f"implementer {key[0]:#x} part {key[1]:#x}")
        name += f" r{(midr >> 20) & 0xF}p{midr & 0xF}"
    features = [n for bit, n in HWCAP_FEATURES.items() if hwcap >> bit & 1]
    features += [n for bit, n in HWCAP2_FEATURES.items() if hwcap2 >> bit & 1]
    return {"cpu_model": name, "features": features}


# --- one run ------------------------------------------------------------------------------------

@dataclass
class TwinRun:
    model_path: str
    cpu: str
    raw_outputs: list[np.ndarray]     # per output tensor: (N, ...) raw values from the ARM kernels
    inside: dict                      # facts reported from inside the twin, CPU decoded
    emulator_seconds: float           # the guest's wall time: emulation cost, not device latency


def run_tensors(tflite_path, inputs: np.ndarray, cpu: str = DEFAULT_CPU, threads: int = 1,
                timeout_s: float = 600.0, progress: Callable[[int], None] | None = None,
                twin: Twin | None = None) -> TwinRun:
    """Run `inputs` ((N, *input shape without batch), the model's dtype and layout) in the twin."""
    twin = twin or find_twin()
    check_cpu(twin, cpu)
    tflite_path = Path(tflite_path).resolve()
    if not tflite_path.is_file():
        raise MixdeployError(f"{tflite_path} does not exist: give the path of a .tflite file")
    if len(inputs) == 0:
        raise MixdeployError("the ARM64 twin needs at least one input")
    with tempfile.TemporaryDirectory(prefix="mixdeploy-twin-", dir=scratch_dir()) as tmp:
        np.save(Path(tmp) / "inputs.npy", np.ascontiguousarray(inputs))
        with guest_script() as script:
            args = [str(script), str(tflite_path), f"{tmp}/inputs.npy", f"{tmp}/outputs.npz",
                    f"--threads={threads}"]
            started = time.perf_counter()
            facts = _run_guest(twin, twin.command(cpu, args), timeout_s, progress, tflite_path.name)
            seconds = time.perf_counter() - started
        with np.load(Path(tmp) / "outputs.npz") as saved:
            raw = [saved[f"output_{k}"] for k in range(len(saved.files))]
    if facts.get("machine") != "aarch64":
        raise DeviceError(f"the ARM64 twin reported machine {facts.get('machine')!r}, not aarch64: "
                          f"rebuild it with `{SETUP_COMMAND}`")
    return TwinRun(model_path=str(tflite_path), cpu=cpu, raw_outputs=raw,
                   inside={**facts, **describe_cpu(facts), "qemu_cpu": cpu}, emulator_seconds=seconds)


def _run_guest(twin: Twin, command: list[str], timeout_s: float, progress, what: str) -> dict:
    """Start the guest, follow its `progress` lines, return its `facts`; a fault is a DeviceError."""
    killed = threading.Event()
    facts = None
    with tempfile.TemporaryFile() as err, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=twin.env(), text=True,
            start_new_session=True) as proc:
        timer = threading.Timer(timeout_s, lambda: (killed.set(), proc.kill()))
        timer.start()
        try:
            for line in proc.stdout:
                if line.startswith("progress ") and progress:
                    progress(1)
                elif line.startswith("facts "):
                    facts = json.loads(line[len("facts "):])
            code = proc.wait()
        finally:                          # also on Ctrl-C: the guest never outlives the call
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
        err.seek(0)
        tail = "\n".join(err.read().decode(errors="replace").strip().splitlines()[-15:])
    if killed.is_set():
        raise DeviceError(f"the ARM64 twin did not finish {what} within {timeout_s:g} s and was killed: "
                          f"raise --timeout or use fewer inputs")
    if code != 0 or facts is None:
        raise DeviceError(f"the ARM64 twin failed on {what} (exit code {code}):\n{tail or '(no output)'}")
    return facts


# --- parity against the host --------------------------------------------------------------------

@dataclass
class TwinParity:
    run: TwinRun
    vs_host: phone.DeviceParity       # twin vs host LiteRT (x86) on the same input bytes
    host_raw: np.ndarray              # (N, ...) host LiteRT's raw first output
    twin_logits: np.ndarray           # (N, classes) float32, dequantized first output
    host_logits: np.ndarray


def compare_with_host(tflite_path, images_nchw: np.ndarray, cpu: str = DEFAULT_CPU, threads: int = 1,
                      timeout_s: float = 600.0, progress=None) -> TwinParity:
    """Preprocessed NCHW float32 images -> the same bytes to the twin and to host LiteRT -> compared
    by the phone path's comparison (phone.compare_outputs, on mixdeploy.parity)."""
    try:
        interp, input_details, output_details = phone.io_details(Path(tflite_path))
    except ValueError as err:             # LiteRT's answer to a file that is no flatbuffer model
        raise MixdeployError(f"{tflite_path} is not a valid TFLite model ({err}): re-export it") from None
    tensors = phone.prepare_parity_inputs(images_nchw, input_details)
    run = run_tensors(tflite_path, np.concatenate(tensors), cpu=cpu, threads=threads,
                      timeout_s=timeout_s, progress=progress)
    out = output_details[0]
    host_raw = phone.host_raw_outputs(interp, input_details, tensors)[0]
    vs_host = phone.compare_outputs(host_raw, run.raw_outputs[0], out)
    n = len(tensors)
    return TwinParity(run=run, vs_host=vs_host, host_raw=host_raw,
                      twin_logits=runtimes.dequantize(run.raw_outputs[0], out).reshape(n, -1),
                      host_logits=runtimes.dequantize(host_raw, out).reshape(n, -1))


class TwinRunner:
    """A mixdeploy.runtimes runner that runs a .tflite in the ARM64 twin (for `parity --backend
    arm64`). After run(), `vs_host_litert` holds how its raw outputs differ from host LiteRT's."""

    def __init__(self, path, cpu: str = DEFAULT_CPU, num_threads: int | None = None, timeout_s: float = 3600.0):
        self.path, self.cpu = Path(path), cpu
        self.name = f"arm64-{cpu}:{self.path.name}"
        self.threads = num_threads or 1
        self.timeout_s = timeout_s
        self.vs_host_litert: dict | None = None
        check_cpu(find_twin(), cpu)           # a missing twin or unknown CPU fails before any work

    def run(self, images_nchw, batch_size=64, progress=None):
        result = compare_with_host(self.path, images_nchw, self.cpu, self.threads, self.timeout_s, progress)
        self.vs_host_litert = vs_host_summary(result)
        return result.twin_logits


def vs_host_summary(result: TwinParity) -> dict:
    inside = result.run.inside
    return {"qemu_cpu": result.run.cpu, "machine": inside["machine"], "cpu_model": inside["cpu_model"],
            "features": inside["features"], "ai_edge_litert": inside["ai_edge_litert"],
            **asdict(result.vs_host), "output_difference": result.vs_host.output_difference.to_dict(),
            "emulator_seconds": round(result.run.emulator_seconds, 2), "latency": None}


def parity_runner(backend: str):
    """`mixdeploy parity --backend`: None for host LiteRT, else a run_parity tflite_runner factory."""
    if backend.strip().lower() == "host":
        return None
    cpu = parse_device(backend)
    if cpu is None:
        raise MixdeployError(f"unknown --backend {backend!r}: use host, or arm64[:CPU] for the ARM64 twin "
                             f"(e.g. arm64, arm64:max)")
    check_cpu(find_twin(), cpu)
    return lambda path, num_threads: TwinRunner(path, cpu=cpu, num_threads=num_threads)


# --- `mixdeploy bench --device arm64 --parity` ------------------------------------------------------

@dataclass
class TwinBenchResult:
    model_path: str
    device: str                         # arm64:CPU
    data: str
    images: int
    inside: dict                        # facts from inside the twin
    host: dict                          # the x86 host and its LiteRT
    vs_host: phone.DeviceParity         # twin vs host LiteRT, same input bytes
    vs_torch: BackendMetrics | None     # twin vs PyTorch (when the PyTorch model is known)
    host_vs_torch: BackendMetrics | None
    emulator_seconds: float
    latency: None = None                # never: an emulator is no clock
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["vs_host"]["output_difference"] = self.vs_host.output_difference.to_dict()
        return d


def bench_twin(tflite_path, images, cpu: str = DEFAULT_CPU, torch_module=None, threads: int = 1,
               timeout_s: float = 600.0, progress=None) -> TwinBenchResult:
    """On-device parity on the twin. `images`: a mixdeploy.data.ImageSet (labels optional)."""
    from mixdeploy import parity
    from mixdeploy.bench.host import host_info

    result = compare_with_host(tflite_path, images.images, cpu, threads, timeout_s, progress)
    vs_torch = host_vs_torch = None
    notes = [NO_LATENCY]
    if torch_module is not None:
        torch_logits = runtimes.TorchRunner(torch_module).run(images.images)
        vs_torch = parity.compare(torch_logits, result.twin_logits, images.labels, backend=f"arm64:{cpu}",
                                  class_names=images.class_names)
        host_vs_torch = parity.compare(torch_logits, result.host_logits, images.labels, backend="host litert",
                                       class_names=images.class_names)
    return TwinBenchResult(model_path=str(tflite_path), device=f"arm64:{cpu}", data=images.source,
                           images=len(images), inside=result.run.inside, host=host_info(),
                           vs_host=result.vs_host, vs_torch=vs_torch, host_vs_torch=host_vs_torch,
                           emulator_seconds=result.run.emulator_seconds, notes=notes)


def reference_model(tflite_path):
    """(LoadedModel, None) for the PyTorch model a .tflite was exported from, when its
    manifest.json says how to rebuild it with the same weights; else (None, why not)."""
    from mixdeploy.artifacts import ExportFolder
    from mixdeploy.models import load_model

    facts = ExportFolder.beside(tflite_path).model_facts
    source, sha = facts.get("source"), facts.get("weights_sha256")
    hint = "pass --torch-model NAME --weights FILE to compare with PyTorch too"
    if not source:
        return None, f"no manifest.json beside {Path(tflite_path).name} names its model: {hint}"
    if not sha:
        return None, f"{source} was exported with random weights, which cannot be rebuilt: {hint}"
    try:
        loaded = load_model(source, num_classes=facts.get("num_classes"))
    except MixdeployError as err:
        return None, f"the manifest's model {source} cannot be loaded here ({err}): {hint}"
    if loaded.weights_sha256 != sha:
        return None, f"the manifest's model {source} loads other weights than were exported: {hint}"
    return loaded, None
