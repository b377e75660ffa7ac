#!/usr/bin/env python3
"""Stand-in for Android's benchmark_model, run by the emulated device (tests/adb_emulator.py).

It is pushed like the real binary and runs the model for real with the host LiteRT
interpreter: the timings it prints (in the classic tool's format, `INFO: ` prefixed) are
measured. --output_filepath gets the real output bytes of the pushed input as a phone's CPU
computes them: from the ARM64 twin (LiteRT's aarch64 kernels under qemu, mixdeploy.bench.twin,
CPU model $EMULATED_DEVICE_CPU) when it is set up, else from the host LiteRT run (then on-device
parity is exact by construction). Each twin run appends its facts from inside (machine, CPU) as
a JSON line to $EMULATED_DEVICE_SANDBOX/twin.log. The op-profiling table follows the newer layout (no
[start] column) with XNNPACK-style node types: depthwise convs above 5x5 show as IGEMM.

Fault behaviour comes from $EMULATED_DEVICE_SANDBOX/behaviour.json:
{"exit_code": 3, "stderr": "...", "sleep_s": 30}.
"""

import json
import os
import sys
import time
from pathlib import Path


def parse_flags(argv):
    flags = {}
    for arg in argv:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            flags[key] = value
    return flags


def split_layer_files(spec):
    """`name:path` items, ':' inside either escaped as '::' (as the real tool reads them)."""
    result = {}
    for item in spec.split(","):
        name, path = item.replace("::", "\0").split(":")
        result[name.replace("\0", ":")] = path.replace("\0", ":")
    return result


def main():
    behaviour_file = Path(os.environ.get("EMULATED_DEVICE_SANDBOX", "/nonexistent")) / "behaviour.json"
    behaviour = json.loads(behaviour_file.read_text()) if behaviour_file.is_file() else {}
    flags = parse_flags(sys.argv[1:])
    print("INFO: STARTING!", flush=True)
    print(f"INFO: Graph: [{flags.get('graph')}]")
    print(f"INFO: #threads used for CPU inference: [{flags.get('num_threads', '1')}]")
    if behaviour.get("sleep_s"):
        time.sleep(float(behaviour["sleep_s"]))
    if behaviour.get("exit_code"):
        sys.stderr.write(behaviour.get("stderr", "ERROR: failed\n"))
        return int(behaviour["exit_code"])

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    graph = flags["graph"]
    print(f"INFO: Loaded model {graph}")
    print(f"INFO: The input model file size (MB): {os.path.getsize(graph) / 1e6:.6f}")
    start = time.perf_counter()
    interp = Interpreter(model_path=graph, num_threads=int(flags.get("num_threads", 1)))
    interp.allocate_tensors()
    init_us = (time.perf_counter() - start) * 1e6
    print(f"INFO: Initialized session in {init_us / 1000:.3f}ms.")
    inp = interp.get_input_details()[0]
    if "input_layer_value_files" in flags:
        # As the real tool: value files only for layers named in --input_layer (with shapes),
        # matched to model inputs by position; the file must be exactly the tensor's bytes.
        layers = flags.get("input_layer", "").split(",") if flags.get("input_layer") else []
        shapes = flags.get("input_layer_shape", "").split(":") if flags.get("input_layer_shape") else []
        if len(layers) != len(shapes):
            print("ERROR: The number of items in --input_layer_shape must match --input_layer", file=sys.stderr)
            return 1
        for name, path in split_layer_files(flags["input_layer_value_files"]).items():
            if name not in layers:
                print(f"ERROR: Cannot find the corresponding input_layer name({name}) in --input_layer as "
                      f"{flags.get('input_layer', '')}", file=sys.stderr)
                return 1
            data = Path(path).read_bytes()
            expected = int(np.prod(inp["shape"])) * np.dtype(inp["dtype"]).itemsize
            if len(data) != expected:
                print(f"ERROR: The size of {path} is {len(data)} bytes. It should be {expected} bytes.",
                      file=sys.stderr)
                return 1
            array = np.frombuffer(data, dtype=inp["dtype"]).reshape(inp["shape"])
            interp.set_tensor(interp.get_input_details()[layers.index(name)]["index"], array)

    def timed(n):
        times = []
        for _ in range(n):
            t = time.perf_counter()
            interp.invoke()
            times.append(int((time.perf_counter() - t) * 1e6))
        return times

    def count_line(times):
        arr = np.asarray(times)
        return (f"INFO: count={len(times)} first={times[0]} curr={times[-1]} min={arr.min()} "
                f"max={arr.max()} avg={arr.mean():g} std={int(arr.std())}")

    warm = timed(max(1, int(flags.get("warmup_runs", 1))))
    print("INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.")
    print(count_line(warm) + "\n")
    runs = timed(max(1, int(flags.get("num_runs", 50))))
    print("INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.")
    print(count_line(runs) + "\n")
    print(f"INFO: Inference timings in us: Init: {int(init_us)}, First inference: {warm[0]}, "
          f"Warmup (avg): {np.mean(warm):g}, Inference (avg): {np.mean(runs):g}")
    print("INFO: Memory footprint delta from the start of the tool (MB): init=3.25 overall=9.5")
    if flags.get("enable_op_profiling") == "true":
        print_op_profile(interp, float(np.mean(runs)) / 1000)
    if "output_filepath" in flags:
        outputs = arm64_outputs(graph, interp.get_tensor(inp["index"])) or \
            [interp.get_tensor(out["index"]) for out in interp.get_output_details()]
        Path(flags["output_filepath"]).write_bytes(b"".join(values.tobytes() for values in outputs))
    return 0


def arm64_outputs(graph, model_input):
    """The outputs of the ARM64 twin on the same input tensor, or None when it is not set up."""
    from mixdeploy.bench import twin

    if twin.missing_reason():
        return None
    run = twin.run_tensors(graph, model_input, cpu=os.environ.get("EMULATED_DEVICE_CPU") or twin.DEFAULT_CPU)
    sandbox = os.environ.get("EMULATED_DEVICE_SANDBOX")
    if sandbox:
        with open(Path(sandbox) / "twin.log", "a") as log:
            log.write(json.dumps(run.inside) + "\n")
    return run.raw_outputs


def print_op_profile(interp, total_ms):
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    precision = "QS8" if interp.get_input_details()[0]["dtype"].__name__ == "int8" else "F32"
    print("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:")
    print("============================== Run Order ==============================")
    print("\t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]")
    share = 100.0 / len(ops)
    for i, op in enumerate(ops):
        node_type = op["op_name"]
        if node_type == "DEPTHWISE_CONV_2D":
            kernel = tensors[op["inputs"][1]]["shape"][1]
            node_type = f"Convolution (NHWC, {precision}) {'DWConv' if kernel <= 5 else 'IGEMM'}"
        elif node_type == "CONV_2D":
            node_type = f"Convolution (NHWC, {precision}) IGEMM"
        name = tensors[op["outputs"][0]]["name"]
        avg = total_ms / len(ops)
        print(f"\t{node_type:>32}\t{avg:9.3f}\t{avg:9.3f}\t{share:7.3f}%\t{share * (i + 1):7.3f}%\t"
              f"{0.0:10.3f}\t{1:>14}\t[{name}]:{i}")
    print("")
    print("============================== Top by Computation Time ==============================")


if __name__ == "__main__":
    sys.exit(main())
