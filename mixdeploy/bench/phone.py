"""The benchmark_model run on an Android device over adb.

One run = read the device state and which cores are online -> push benchmark_model and the
device script into a content-addressed cache (skipped when the same sha256 is there,
device_files.py; the script's version checked, device_script.py) -> the script makes a run
folder with its reaper -> push the model into it (or into the bounded cache, --keep-on-device) ->
the script runs benchmark_model pinned to the big cores that are online (cpus.py), with a
timeout -> parse -> optional on-device parity (push inputs, the script runs once per input, pull
outputs, compare with host LiteRT) -> the script always removes the run folder (also on failure
or Ctrl-C): nothing of the run stays on the phone. What runs on the phone is the script's
business; this module only passes it arguments.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mixdeploy.bench import cpus, device_files, device_script
from mixdeploy.bench.adb import Adb, CommandTimeout, DeviceInfo
from mixdeploy.bench.attribution import AttributionError, attribute, model_ops
from mixdeploy.bench.parse import BenchmarkOutput, OpProfileRow, parse_benchmark_output
from mixdeploy.atomic import scratch_dir
from mixdeploy.errors import DeviceError, MixdeployError
from mixdeploy.parity import OutputDifference, compare, output_difference
from mixdeploy.runtimes import dequantize, quantize_for_input

CONFIG_PATH = Path("~/.config/mixdeploy/config.toml")
# Package data (pyproject's package-data), so an installed wheel has the profiles too.
PROFILES_RESOURCE = "device_profiles.json"
BINARY_HELP = (
    "benchmark_model for Android arm64 is needed: download the TensorFlow project's nightly "
    "`android_aarch64_benchmark_model` (see android_bench/README.md), then pass "
    "--benchmark-binary PATH, set MIXDEPLOY_BENCHMARK_MODEL=PATH, or put "
    "`benchmark_binary = \"PATH\"` in ~/.config/mixdeploy/config.toml")


@dataclass
class DeviceState:
    serial: str
    model: str | None = None
    android_version: str | None = None
    sdk: str | None = None
    soc: str | None = None
    board_platform: str | None = None
    abi: str | None = None
    thermal_status: int | None = None     # 0 none .. 6 shutdown (PowerManager.THERMAL_STATUS_*)
    battery_level: int | None = None


@dataclass
class SlowDepthwise:
    """A depthwise conv that XNNPACK ran through its generic (IGEMM) path, not DWConv."""

    name: str
    layer: str | None          # MixNet layer, e.g. blocks.2.0.conv_dw.3, when the name allows
    kernel: tuple[int, int] | None
    node_type: str
    avg_ms: float
    profile_row: str = ""      # the op profile row it was matched to (real profiles name rows by node, not tensor)


@dataclass
class DeviceParity:
    count: int
    top1_agreement: float
    cosine_min: float
    cosine_mean: float
    max_abs_err: float
    output_difference: OutputDifference | None = None   # raw device outputs vs the host's


@dataclass
class PhoneBenchResult:
    model_path: str
    device: DeviceState
    threads: int
    delegate: str
    cpu_mask: str | None
    command: str
    benchmark: BenchmarkOutput
    pushed: dict[str, bool]                 # file -> True if pushed, False if the cache had it
    slow_depthwise: list[SlowDepthwise] = field(default_factory=list)
    parity: DeviceParity | None = None
    notes: list[str] = field(default_factory=list)
    run_dir: str = ""
    server: str = ""                        # the adb server (HOST:PORT) the phone is attached to
    online_cpus: list[int] | None = None    # what /sys/devices/system/cpu/online said at run time
    device_profile: str | None = None       # the name of the device_profiles.json entry it matched

    @property
    def median_ms(self) -> float | None:
        return self.benchmark.median_ms

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PhoneFailure:
    """A run that did not finish: a row of its own in a fleet's results."""

    model_path: str
    server: str
    serial: str
    device_model: str | None
    error: str

    def to_dict(self) -> dict:
        return {**asdict(self), "failed": True}


@dataclass
class RunOptions:
    """How each benchmark_model run is made (the flags of `mixdeploy bench` on a phone)."""

    threads: int | None = None
    delegate: str = "xnnpack"
    op_profile: bool = False
    parity_inputs: np.ndarray | None = None       # NCHW float32, preprocessed
    runs: int = 50
    warmup: int = 5
    timeout_s: float = 600.0
    keep_on_device: bool = False                  # cache the models on the phone (bounded) instead
    device_cache_mb: int = device_files.DEFAULT_CACHE_LIMIT_MB


# --- configuration ------------------------------------------------------------------------------

def resolve_benchmark_binary(flag: str | None = None) -> Path:
    """--benchmark-binary, else MIXDEPLOY_BENCHMARK_MODEL, else benchmark_binary in the config."""
    candidate, origin = flag, "--benchmark-binary"
    if not candidate and os.environ.get("MIXDEPLOY_BENCHMARK_MODEL"):
        candidate, origin = os.environ["MIXDEPLOY_BENCHMARK_MODEL"], "MIXDEPLOY_BENCHMARK_MODEL"
    if not candidate:
        config = CONFIG_PATH.expanduser()
        if config.is_file():
            try:
                import tomllib   # Python >= 3.11
            except ModuleNotFoundError as err:
                raise MixdeployError(f"reading {config} needs Python 3.11+: use --benchmark-binary "
                                     f"or MIXDEPLOY_BENCHMARK_MODEL instead") from err
            try:
                candidate = tomllib.loads(config.read_text()).get("benchmark_binary")
            except tomllib.TOMLDecodeError as err:
                raise MixdeployError(f"{config} is not valid TOML ({err}): fix or remove it") from err
            origin = str(config)
    if not candidate:
        raise MixdeployError(BINARY_HELP)
    path = Path(candidate).expanduser()
    if not path.is_file():
        raise MixdeployError(f"benchmark_model binary {path} (from {origin}) does not exist. {BINARY_HELP}")
    return path


def load_profiles(path: Path | None = None) -> list[dict]:
    """The device profiles: `path`, else $MIXDEPLOY_DEVICE_PROFILES, else the ones shipped in the package."""
    from importlib import resources

    given = path or os.environ.get("MIXDEPLOY_DEVICE_PROFILES")
    if given is None:
        shipped = resources.files("mixdeploy.bench").joinpath(PROFILES_RESOURCE)
        return json.loads(shipped.read_text()).get("profiles", [])
    if not Path(given).is_file():
        return []
    return json.loads(Path(given).read_text()).get("profiles", [])


def match_profile(state: DeviceState, profiles: list[dict]) -> dict | None:
    platform = (state.board_platform or "").lower()
    model = (state.model or "").lower()
    for profile in profiles:
        if platform and platform in [p.lower() for p in profile.get("board_platforms", [])]:
            return profile
    for profile in profiles:
        if model and any(m.lower() in model for m in profile.get("models", [])):
            return profile
    return None


# --- device facts -------------------------------------------------------------------------------

def read_device_state(adb: Adb, serial: str) -> DeviceState:
    """getprop in one shell call; thermal/battery via dumpsys, best effort (may be absent)."""
    props = ["ro.product.model", "ro.build.version.release", "ro.build.version.sdk",
             "ro.soc.model", "ro.board.platform", "ro.product.cpu.abi"]
    out = adb.shell(serial, "; ".join(f"echo \"{p}=$(getprop {p})\"" for p in props), timeout=20,
                    check=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    state = DeviceState(serial=serial, model=values.get(props[0]) or None,
                        android_version=values.get(props[1]) or None, sdk=values.get(props[2]) or None,
                        soc=values.get(props[3]) or None, board_platform=values.get(props[4]) or None,
                        abi=values.get(props[5]) or None)
    thermal = adb.shell(serial, "dumpsys thermalservice", timeout=20)
    if m := re.search(r"Thermal Status:\s*(\d+)", thermal.stdout):
        state.thermal_status = int(m.group(1))
    battery = adb.shell(serial, "dumpsys battery", timeout=20)
    if m := re.search(r"^\s*level:\s*(\d+)", battery.stdout, re.M):
        state.battery_level = int(m.group(1))
    return state


# --- the run --------------------------------------------------------------------------------------

EXIT_MARKER = "__MIXDEPLOY_EXIT="


def run_on_device(script: device_script.DeviceScript, command: str, run_dir: str, timeout: float, what: str):
    """Run a script action with a timeout; tell apart tool failure, a script failure, a device
    that went away, and a timeout.

    The host's shell echoes an exit marker after the script ends: when the connection drops
    mid-run, adb (29 at least) can exit 0 with truncated output, and without shell v2 it always
    exits 0; a missing marker means the run did not finish where we could see it. (The marker is
    the host's, not the script's: it must come even when the phone's sh cannot start the script.)
    """
    adb, serial = script.adb, script.serial
    wrapped = f"{command}; status=$?; echo {EXIT_MARKER}$status; exit $status"
    try:
        result = adb.shell(serial, wrapped, timeout=timeout)
    except CommandTimeout as err:
        script.stop(run_dir)     # the adb client is gone, but on a phone the tool can outlive it
        raise CommandTimeout(f"{what} did not finish within {timeout:g} s on {serial}: it was "
                             f"killed and its run folder cleaned up. Raise --timeout, lower --runs, "
                             f"or check the phone is not throttling") from err
    stdout, marker, status = result.stdout.rpartition(EXIT_MARKER)
    if not marker:
        adb.raise_if_gone(serial)
        raise DeviceError(f"{what} on {serial} stopped without finishing (adb exit code "
                          f"{result.exit_code}); output ends with:\n{_tail(result.stdout + result.stderr)}")
    result.stdout = stdout
    exit_code = int(status.split()[0]) if status.split() else result.exit_code
    if exit_code != 0:
        adb.raise_if_gone(serial)
        tail = _tail(result.stderr.strip() or stdout.strip())
        if meaning := device_script.exit_code_meaning(exit_code):
            raise DeviceError(f"{what} on {serial}: the device script stopped with exit code {exit_code}: "
                              f"{meaning}\n{tail}")
        raise DeviceError(f"{what} failed on {serial} with exit code {exit_code}:\n{tail}")
    return result


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def bench_phone(tflite_path: str | os.PathLike, device: str | None = None,
                benchmark_binary: str | os.PathLike | None = None, threads: int | None = None,
                delegate: str = "xnnpack", op_profile: bool = False,
                parity_inputs: np.ndarray | None = None, runs: int = 50, warmup: int = 5,
                timeout_s: float = 600.0, adb: Adb | None = None, keep_on_device: bool = False,
                device_cache_mb: int = device_files.DEFAULT_CACHE_LIMIT_MB) -> list[PhoneBenchResult]:
    """Benchmark `tflite_path` on each selected device; the first fault stops the run (a fleet
    that carries on past failed phones: mixdeploy.bench.fleet). `parity_inputs`: NCHW float32."""
    tflite_path = check_model_file(tflite_path)
    options = RunOptions(threads, delegate, op_profile, parity_inputs, runs, warmup, timeout_s,
                         keep_on_device, device_cache_mb)
    check_options(options)
    binary = resolve_benchmark_binary(str(benchmark_binary) if benchmark_binary else None)
    adb = adb or Adb()
    return [bench_on_device(adb, info, tflite_path, binary, options) for info in adb.select(device)]


def check_model_file(tflite_path: str | os.PathLike) -> Path:
    tflite_path = Path(tflite_path)
    if not tflite_path.is_file():
        raise MixdeployError(f"{tflite_path} does not exist: give the path of a .tflite file")
    return tflite_path


def check_options(options: RunOptions) -> None:
    if options.delegate not in device_script.DELEGATES:
        raise MixdeployError(f"unknown delegate {options.delegate!r}: choose one of {', '.join(device_script.DELEGATES)}")
    if options.device_cache_mb < 1:
        raise MixdeployError("--device-cache-mb must be at least 1")


def bench_on_device(adb: Adb, info: DeviceInfo, tflite_path: Path, binary: Path,
                    options: RunOptions) -> PhoneBenchResult:
    serial = info.serial
    state = read_device_state(adb, serial)
    profile = match_profile(state, load_profiles())
    pinning = cpus.choose_pinning(profile, cpus.read_cpu_facts(adb, serial),
                                  f"board {state.board_platform!r} / model {state.model!r}")
    notes = [pinning.note] if pinning.note else []
    threads = options.threads or cpus.default_threads(profile, pinning)
    if state.thermal_status:
        notes.append(f"thermal status {state.thermal_status} (> 0): the phone may be throttling")

    remote_binary, binary_pushed = device_files.push_cached(adb, serial, binary, executable=True)
    script = device_script.install(adb, serial)
    run_dir = device_files.new_run_dir()
    try:   # start inside: a start that fails half-way (folder made, reaper not up) is cleaned too
        script.start(run_dir, options.timeout_s + device_files.REAPER_MARGIN_S)
        remote_model, model_pushed = _place_model(script, tflite_path, run_dir, remote_binary, options, notes)
        command = script.bench_command(run_dir, remote_binary, remote_model, threads=threads,
                                       delegate=options.delegate, runs=options.runs, warmup=options.warmup,
                                       cpu_mask=pinning.mask, op_profile=options.op_profile)
        output = run_on_device(script, command, run_dir, options.timeout_s, "benchmark_model")
        try:
            parsed = parse_benchmark_output(output.stdout)
        except ValueError as err:
            raise DeviceError(f"benchmark_model on {serial} printed no timings ({err}); its output "
                              f"ends with:\n" + "\n".join(output.stdout.splitlines()[-10:])) from err
        slow = _slow_depthwise(parsed.op_profile, tflite_path, notes) if options.op_profile else []
        parity = None
        if options.parity_inputs is not None:
            parity = device_parity(script, tflite_path, remote_binary, remote_model, run_dir,
                                   options.parity_inputs, threads, options.delegate, pinning.mask,
                                   options.timeout_s)
    finally:
        script.clean(run_dir)
    return PhoneBenchResult(model_path=str(tflite_path), device=state, threads=threads,
                            delegate=options.delegate, cpu_mask=pinning.mask, command=command, benchmark=parsed,
                            pushed={binary.name: binary_pushed, tflite_path.name: model_pushed},
                            slow_depthwise=slow, parity=parity, notes=notes, run_dir=run_dir,
                            server=adb.server_label, online_cpus=pinning.online,
                            device_profile=profile.get("name") if profile else None)


def _place_model(script: device_script.DeviceScript, tflite_path: Path, run_dir: str, remote_binary: str,
                 options: RunOptions, notes: list[str]) -> tuple[str, bool]:
    """The model into this run's folder (gone with it), or into the bounded cache (--keep-on-device)."""
    adb, serial = script.adb, script.serial
    script.touch(run_dir)
    if not options.keep_on_device:
        return device_files.push_into_run(adb, serial, tflite_path, run_dir, options.timeout_s), True
    remote, pushed = device_files.push_cached(adb, serial, tflite_path, timeout=options.timeout_s)
    evicted = device_files.evict_cache(adb, serial, {remote, remote_binary, script.remote},
                                       options.device_cache_mb * 2**20)
    if evicted:
        notes.append(f"device cache over {options.device_cache_mb} MB: removed {len(evicted)} least recently "
                     f"used file(s): {', '.join(Path(e).name for e in evicted)}")
    return remote, pushed


# --- op profile -> MixNet layers ------------------------------------------------------------------

_MIXNET_LAYER = re.compile(r"blocks[./_](\d+)[./_](\d+)[./_]+(conv_dw|conv_pw|conv_pwl|se)(?:[./_](\d+))?")


def mixnet_layer_name(name: str) -> str | None:
    """`.../blocks.2/blocks.2.0/conv_dw/conv_dw.3/Conv` -> `blocks.2.0.conv_dw.3`."""
    matches = list(_MIXNET_LAYER.finditer(name))
    if not matches:
        return None
    stage, block, kind, index = matches[-1].groups()
    return f"blocks.{stage}.{block}.{kind}" + (f".{index}" if index is not None else "")


def find_slow_depthwise(rows: list[OpProfileRow], tflite_path: Path) -> list[SlowDepthwise]:
    """Depthwise convs of the model that XNNPACK ran through a GEMM path, not its DWConv kernels."""
    slow = []
    for matched in attribute(rows, model_ops(tflite_path)):
        op = matched.op
        if op is None or op.op_name != "DEPTHWISE_CONV_2D" or "GEMM" not in matched.row.node_type:
            continue
        name = op.outputs[0]
        slow.append(SlowDepthwise(name=name, layer=next(filter(None, map(mixnet_layer_name, op.scopes)), None),
                                  kernel=op.kernel, node_type=matched.row.node_type, avg_ms=matched.row.avg_ms,
                                  profile_row=matched.row.name))
    return slow


def _slow_depthwise(rows: list[OpProfileRow], tflite_path: Path, notes: list[str]) -> list[SlowDepthwise]:
    try:
        return find_slow_depthwise(rows, tflite_path)
    except AttributionError as err:
        notes.append(f"op profile not matched to the model's ops, so no slow depthwise convs are named: {err}")
        return []


# --- on-device parity ---------------------------------------------------------------------------

def io_details(tflite_path: Path):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path))
    interp.allocate_tensors()
    return interp, interp.get_input_details()[0], interp.get_output_details()


def prepare_parity_inputs(images_nchw: np.ndarray, input_details: dict) -> list[np.ndarray]:
    """NCHW float32 (preprocessed) -> one tensor per image, exactly the model input (NHWC, dtype)."""
    shape = [int(s) for s in input_details["shape"]]
    if images_nchw.ndim != 4 or images_nchw.shape[1:] != (shape[3], shape[1], shape[2]):
        raise MixdeployError(f"parity inputs have shape {tuple(images_nchw.shape)} but the model takes "
                             f"NHWC {tuple(shape)}: give N x {shape[3]} x {shape[1]} x {shape[2]} "
                             f"float32 images preprocessed for this model")
    nhwc = images_nchw.astype(np.float32).transpose(0, 2, 3, 1)
    return [quantize_for_input(image[None], input_details) for image in nhwc]


def device_parity(script: device_script.DeviceScript, tflite_path: Path, remote_binary: str, remote_model: str,
                  run_dir: str, images_nchw: np.ndarray, threads: int, delegate: str,
                  cpu_mask: str | None, timeout_s: float) -> DeviceParity:
    adb, serial = script.adb, script.serial
    interp, input_details, output_details = io_details(tflite_path)
    tensors = prepare_parity_inputs(images_nchw, input_details)
    inputs = [f"{run_dir}/input_{i}.bin" for i in range(len(tensors))]
    with tempfile.TemporaryDirectory(prefix="mixdeploy-parity-", dir=scratch_dir()) as tmp:
        script.touch(run_dir)        # the pushes below are quick
        for tensor, remote in zip(tensors, inputs):
            local = Path(tmp) / Path(remote).name
            local.write_bytes(np.ascontiguousarray(tensor).tobytes())
            adb.push(serial, str(local), remote)
        # One script action for all inputs (one adb round trip); each tool run is a process of
        # its own that the script can stop, so a timeout kills the one running.
        run_on_device(script, script.parity_command(
            run_dir, remote_binary, remote_model, inputs, input_layer=input_details["name"],
            input_shape=list(input_details["shape"]), threads=threads, delegate=delegate, cpu_mask=cpu_mask),
            run_dir, timeout_s, "benchmark_model (parity)")
        device_raw = []
        out = output_details[0]
        for i, remote in enumerate(inputs):
            local = Path(tmp) / f"output_{i}.bin"
            adb.pull(serial, device_script.output_path(remote), str(local))
            raw = np.frombuffer(local.read_bytes(), dtype=out["dtype"])
            expected = int(np.prod(out["shape"]))
            if raw.size < expected:
                raise DeviceError(f"benchmark_model wrote {raw.size} values for output "
                                  f"{out['name']} but {expected} were expected: is the binary "
                                  f"older than --output_filepath support?")
            device_raw.append(raw[:expected].reshape(out["shape"][1:]))
    host_raw = host_raw_outputs(interp, input_details, tensors)[0]
    return compare_outputs(host_raw, np.stack(device_raw), out)


def host_raw_outputs(interp, input_details: dict, tensors: list[np.ndarray]) -> list[np.ndarray]:
    """Host LiteRT on the same input tensors a device got: per output, (N, ...) raw values."""
    outputs = [[] for _ in interp.get_output_details()]
    for tensor in tensors:
        interp.set_tensor(input_details["index"], tensor)
        interp.invoke()
        for values, detail in zip(outputs, interp.get_output_details()):
            values.append(interp.get_tensor(detail["index"])[0].copy())
    return [np.stack(values) for values in outputs]


def compare_outputs(host_raw: np.ndarray, device_raw: np.ndarray, details: dict) -> DeviceParity:
    """A device's raw outputs against the host's for the same inputs: logit metrics of the
    dequantized values and how many raw values differ (by how many quantization steps)."""
    result = compare_logits(dequantize(host_raw, details), dequantize(device_raw, details))
    result.output_difference = output_difference(host_raw, device_raw)
    return result


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> DeviceParity:
    """Logits (N, ...) of a device against the host's, through mixdeploy.parity.compare."""
    metrics = compare(reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1),
                      backend="device")
    return DeviceParity(count=metrics.images, top1_agreement=metrics.top1_agreement,
                        cosine_min=metrics.min_cosine, cosine_mean=metrics.mean_cosine,
                        max_abs_err=metrics.max_abs_error)
