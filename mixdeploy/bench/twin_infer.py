"""Runs INSIDE the ARM64 twin: one .tflite over given inputs with LiteRT's aarch64 build.

    python3.11 -S -B twin_infer.py MODEL.tflite INPUTS.npy OUTPUTS.npz [--threads N]

mixdeploy.bench.twin starts it with the Debian arm64 python3.11 under qemu-aarch64-static (see
android_bench/setup_arm64_twin.sh); it also runs on a real arm64 Linux machine. It needs only
the standard library, numpy and ai_edge_litert: mixdeploy is not importable in there. It ships as
package data of mixdeploy.bench (an installed wheel has it); run as a script, its folder comes first
on sys.path, and none of the modules beside it shares a name with what it imports.

INPUTS.npy   (N, *input shape without its batch) in the model's input dtype and layout: the exact
             tensors a phone would be given (the host quantizes and transposes). Each row is one
             batch-1 invoke, as benchmark_model runs it on a phone.
OUTPUTS.npz  output_0 .. output_K: (N, *output shape without batch), raw values as the ARM kernels
             wrote them (an int8 output stays int8; the host dequantizes).
stdout       `progress I` after input I (1-based), then one `facts {json}` line: what really ran
             (machine, python, numpy, litert, MIDR_EL1 and HWCAPs as this CPU shows them,
             nodes delegated to XNNPACK).
exit code    0 done, 2 inputs that do not fit the model, 3 a model LiteRT cannot load.
"""

import argparse
import ctypes
import json
import mmap
import platform
import struct
import sys

AT_HWCAP, AT_HWCAP2 = 16, 26


def auxv(key):
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    libc.getauxval.argtypes = [ctypes.c_ulong]
    return int(libc.getauxval(key))


def read_midr():
    """MIDR_EL1 (implementer, part, revision): the CPU model this process runs on.

    Linux lets user space read the ID registers (HWCAP_CPUID: the kernel, or qemu-user, emulates
    the MRS), and /proc/cpuinfo under qemu-user is the host's. Two instructions in an executable
    page: `mrs x0, midr_el1; ret`.
    """
    if platform.machine() != "aarch64":
        return None
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(struct.pack("<2I", 0xD5380000, 0xD65F03C0))
    function = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    value = int(function())
    del function
    return value


def facts(interpreter):
    import ai_edge_litert
    import numpy

    try:
        midr = read_midr()
    except (OSError, ValueError):       # no executable mappings allowed here: report without it
        midr = None
    return {"machine": platform.machine(), "python": platform.python_version(),
            "numpy": numpy.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "unknown"),
            "midr": midr, "hwcap": auxv(AT_HWCAP), "hwcap2": auxv(AT_HWCAP2),
            "delegate_nodes": sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as err:    # not a model this LiteRT can run: one clear line
        sys.stderr.write(f"LiteRT cannot load {args.model}: {type(err).__name__} {err}\n")
        return 3
    [model_input] = interpreter.get_input_details()
    inputs = np.load(args.inputs)
    expected = tuple(int(d) for d in model_input["shape"][1:])
    if inputs.dtype != model_input["dtype"] or inputs.shape[1:] != expected:
        sys.stderr.write(f"inputs are {inputs.dtype} {inputs.shape}; the model takes "
                         f"{np.dtype(model_input['dtype'])} (N, {', '.join(map(str, expected))})\n")
        return 2
    outputs = {detail["index"]: [] for detail in interpreter.get_output_details()}
    for i, tensor in enumerate(inputs):
        interpreter.set_tensor(model_input["index"], tensor[None])
        interpreter.invoke()
        for index, values in outputs.items():
            values.append(interpreter.get_tensor(index)[0].copy())
        print(f"progress {i + 1}", flush=True)
    np.savez(args.outputs, **{f"output_{k}": np.stack(values) for k, values in enumerate(outputs.values())})
    print("facts " + json.dumps(facts(interpreter)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
