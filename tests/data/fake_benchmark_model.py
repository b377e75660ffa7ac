#!/usr/bin/env python3
"""Stand-in for Android's benchmark_model, run by the emulated device (tests/adb_emulator.py).

It is pushed like the real binary and runs the model for real with the host LiteRT
interpreter: the timings it prints (in the classic tool's format, `INFO: ` prefixed) are
measured. --output_filepath gets the real output bytes of the pushed input as a phone's CPU
computes them: from the ARM64 twin (LiteRT's aarch64 kernels under qemu, mixdeploy.bench.twin,
CPU model $EMULATED_DEVICE_CPU) when it is set up, else from the host LiteRT run (then on-device
parity is exact by construction). Each twin run appends its facts from inside (machine, CPU) as
a JSON line to $EMULATED_DEVICE_SANDBOX/twin.log.

--enable_op_profiling prints the regular-runs table as the real tool does (newer layout, no
[start] column; rows per tensorflow/lite/profiling/profile_summarizer.cc): ops in XNNPACK
partitions as `Delegate/OPERATOR:I` rows (node type = XNNPACK operator name: operator, layout,
datatype, microkernel; I = index in the partition), each partition as a `TfLiteXNNPackDelegate`
row named by its output tensors and node index, ops left to the interpreter as `[tensors]:NODE`
rows. Emulated XNNPACK behaviour: a SPLIT of more than 4 outputs or a CONCATENATION of more than
5 inputs stays out of the partitions (XNNPACK's split/concatenate node limits); a PAD whose only
consumer is a convolution is fused into it (no row of its own); a depthwise conv of more than 25
taps runs as IGEMM, others as DWConv, 1x1 convs as GEMM.

Per-op times: measured (the run's mean spread evenly over the rows), or, when
$EMULATED_DEVICE_SANDBOX/op_costs.json exists, modelled so a test controls which lowering is
fastest: {"depthwise_ms_per_channel": {"7x7": 0.05, ..., "default": 0.0015}, "other_ms": 0.002,
"by_operator": {"Add": 0.001}}: a depthwise conv costs its kernel's rate times its channels,
every other row other_ms (or its operator's), and the printed timings are their sum.

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
    runs = timed(max(1, int(flags.get("num_runs", 50))))
    costs = op_costs()
    rows = profile_rows(interp)
    if costs is not None:        # the modelled phone: its timings are the sum of its op costs
        modelled = int(sum(ms for node_type, _, ms in timed_rows(rows, costs, 0)
                           if node_type != "TfLiteXNNPackDelegate") * 1000)
        warm, runs = [modelled] * len(warm), [modelled] * len(runs)
    print("INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.")
    print(count_line(warm) + "\n")
    print("INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.")
    print(count_line(runs) + "\n")
    print(f"INFO: Inference timings in us: Init: {int(init_us)}, First inference: {warm[0]}, "
          f"Warmup (avg): {np.mean(warm):g}, Inference (avg): {np.mean(runs):g}")
    print("INFO: Memory footprint delta from the start of the tool (MB): init=3.25 overall=9.5")
    if flags.get("enable_op_profiling") == "true":
        print_op_profile(timed_rows(rows, costs, float(np.mean(runs)) / 1000))
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


def op_costs():
    path = Path(os.environ.get("EMULATED_DEVICE_SANDBOX", "/nonexistent")) / "op_costs.json"
    return json.loads(path.read_text()) if path.is_file() else None


def xnnpack_operator(op, tensors, quantized):
    """An XNNPACK-style operator name: operator (layout, datatype) microkernel."""
    name, q, x = op["op_name"], ("QS8" if quantized else "F32"), ("X8" if quantized else "X32")
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        shape = tensors[op["inputs"][1]]["shape"]
        taps = int(shape[1]) * int(shape[2])
        kernel = "GEMM" if taps == 1 else ("DWConv" if name == "DEPTHWISE_CONV_2D" and taps <= 25 else "IGEMM")
        return f"Convolution (NHWC, {'QC8' if quantized else 'F32'}) {kernel}"
    plain = {"FULLY_CONNECTED": f"Fully Connected (NC, {q}) GEMM", "ADD": f"Add (ND, {q})",
             "MUL": f"Multiply (ND, {q})", "LOGISTIC": f"Sigmoid (NC, {q})", "PAD": f"Constant Pad (ND, {x})",
             "STRIDED_SLICE": f"Slice (ND, {x})", "SPLIT": f"Even Split (ND, {x})",
             "CONCATENATION": f"Concatenate (ND, {x})", "MEAN": f"Mean (ND, {q})",
             "QUANTIZE": f"Convert (NC, F32, {q})", "RELU": f"Clamp (NC, {q})"}
    return plain.get(name, f"{name.title()} (ND, {x})")


def in_xnnpack(op):
    if op["op_name"] == "SPLIT":
        return len(op["outputs"]) <= 4
    if op["op_name"] == "CONCATENATION":
        return len(op["inputs"]) <= 5
    return True


def profile_rows(interp):
    """(node type, name, op) per profile row, in run order; op None for a partition's own row."""
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]
    quantized = interp.get_input_details()[0]["dtype"].__name__ == "int8"
    consumers = {}
    for op in ops:
        for i in op["inputs"]:
            consumers.setdefault(int(i), []).append(op)
    rows, partition, partitions = [], [], 0

    def close_partition():
        nonlocal partition, partitions
        if partition:
            outputs = ", ".join(tensors[i]["name"] for i in partition[-1]["outputs"])
            rows.append(("TfLiteXNNPackDelegate", f"[{outputs}]:{len(ops) + partitions}", None))
            partitions += 1
            index = 0
            for op in partition:
                users = consumers.get(int(op["outputs"][0]), [])
                if op["op_name"] == "PAD" and len(users) == 1 and users[0]["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                    continue          # XNNPACK fuses it into the convolution
                node_type = xnnpack_operator(op, tensors, quantized)
                rows.append((node_type, f"Delegate/{node_type}:{index}", (op, tensors)))
                index += 1
        partition = []

    for op in ops:
        if in_xnnpack(op):
            partition.append(op)
            continue
        close_partition()
        outputs = ", ".join(tensors[i]["name"] for i in op["outputs"])
        rows.append((op["op_name"], f"[{outputs}]:{op['index']}", (op, tensors)))
    close_partition()
    return rows


def timed_rows(rows, costs, total_ms):
    """(node type, name, avg ms) per row; a partition row is the sum of its operators' rows."""
    def cost(node_type, op, tensors):
        if costs is None:
            return total_ms / max(1, sum(r[2] is not None for r in rows))
        if op["op_name"] == "DEPTHWISE_CONV_2D":
            shape = tensors[op["inputs"][1]]["shape"]
            rates = costs.get("depthwise_ms_per_channel", {})
            rate = rates.get(f"{shape[1]}x{shape[2]}", rates.get("default", 0.0015))
            return rate * int(shape[3])
        return costs.get("by_operator", {}).get(node_type.split(" (")[0], costs.get("other_ms", 0.002))

    timed, pending = [], None
    for node_type, name, detail in rows:
        if detail is None:
            pending = [node_type, name, 0.0]
            timed.append(pending)
            continue
        ms = cost(node_type, *detail)
        if pending is not None and name.startswith("Delegate/"):
            pending[2] += ms
        else:
            pending = None
        timed.append([node_type, name, ms])
    return [tuple(row) for row in timed]


def print_op_profile(rows):
    total = sum(ms for node_type, _, ms in rows if node_type != "TfLiteXNNPackDelegate") or 1.0
    print("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:")
    print("INFO: ============================== Run Order ==============================")
    print("INFO: \t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]")
    cdf = 0.0
    for node_type, name, ms in rows:
        share = 100.0 * ms / total
        cdf += share if node_type != "TfLiteXNNPackDelegate" else 0.0
        print(f"INFO: \t{node_type:>32}\t{ms:9.3f}\t{ms:9.3f}\t{share:7.3f}%\t{cdf:7.3f}%\t"
              f"{0.0:10.3f}\t{1:>14}\t{name}")
    print("INFO: ")
    print("INFO: ============================== Top by Computation Time ==============================")


if __name__ == "__main__":
    sys.exit(main())
