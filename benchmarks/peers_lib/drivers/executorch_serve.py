"""Runs inside .venv-executorch: serves one .pte through executorch.runtime, batch 1, over pipes.

Started by benchmarks/peers_lib/executorch.py. Protocol (binary, on stdin/stdout):
  on start   one JSON line: input_shape, output_shape, threads (the threadpool's size);
  b"LOGI" + int32 n + n images (float32, the input shape's C*H*W each)
             -> n rows of logits, float32;
  b"TIME"    -> float64: ms of one Method.execute on the last image sent (timed here, so the
             pipe round trip is not in it);
  b"QUIT"    -> exit.
The threadpool that the XNNPACK delegate uses is sized with portable_lib's
`_unsafe_reset_threadpool(--threads)` before the program loads (the python API's only knob).
"""

import argparse
import json
import os
import struct
import sys
import time

import numpy as np
import torch

from executorch.extension.pybindings import portable_lib
from executorch.runtime import Runtime


def read_exact(stream, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        sys.exit(0)  # the parent went away
    return data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help=".pte")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    # The channel is a private copy of stdout; anything the runtime prints goes to stderr.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer

    portable_lib._unsafe_reset_threadpool(args.threads)
    method = Runtime.get().load_program(args.model).load_method("forward")
    meta = method.metadata
    input_shape = list(meta.input_tensor_meta(0).sizes())
    output_shape = list(meta.output_tensor_meta(0).sizes())
    channel.write((json.dumps({"input_shape": input_shape, "output_shape": output_shape,
                               "threads": portable_lib._threadpool_get_thread_count()}) + "\n").encode())
    channel.flush()

    image_floats = int(np.prod(input_shape[1:]))
    last = torch.zeros(input_shape)
    while True:
        op = read_exact(requests, 4)
        if op == b"LOGI":
            (n,) = struct.unpack("<i", read_exact(requests, 4))
            images = np.frombuffer(read_exact(requests, 4 * n * image_floats), np.float32).reshape([n] + input_shape[1:])
            rows = []
            for image in images:
                last = torch.from_numpy(image[None].copy())
                rows.append(method.execute([last])[0].float().numpy().reshape(-1))
            channel.write(np.ascontiguousarray(np.stack(rows), np.float32).tobytes())
        elif op == b"TIME":
            start = time.perf_counter()
            method.execute([last])
            channel.write(struct.pack("<d", (time.perf_counter() - start) * 1000))
        else:
            return
        channel.flush()


if __name__ == "__main__":
    main()
