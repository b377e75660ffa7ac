"""Runs inside .venv-executorch (see benchmarks/setup_peers.sh): one of our MixNets to an int8 .pte.

ExecuTorch 1.5's documented XNNPACK int8 flow: torch.export, prepare_pt2e with
XNNPACKQuantizer(get_symmetric_quantization_config(is_per_channel=True)) (static activations),
calibration on the given images, convert_pt2e, torch.export again, then
to_edge_transform_and_lower(partitioner=[XnnpackPartitioner()]).to_executorch().
Prints one JSON line: the conversion time and how many nodes XNNPACK took.
"""

import argparse
import json
import time

import numpy as np
import torch

from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
from executorch.exir import to_edge_transform_and_lower
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

from mixdeploy.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a load_model source: a mixdeploy checkpoint or a model name")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--calib", required=True, help=".npy, NCHW float32, preprocessed")
    parser.add_argument("--out", required=True, help="the .pte to write")
    args = parser.parse_args()

    torch.set_num_threads(2)
    loaded = load_model(args.model, input_size=args.input_size)
    size = loaded.preprocessing.input_size
    sample = (torch.zeros(1, 3, size, size),)
    start = time.perf_counter()
    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(torch.export.export(loaded.module.eval(), sample).module(), quantizer)
    with torch.no_grad():
        for image in np.load(args.calib):
            prepared(torch.from_numpy(image[None]))
    quantized = convert_pt2e(prepared)
    lowered = to_edge_transform_and_lower(torch.export.export(quantized, sample), partitioner=[XnnpackPartitioner()])
    delegated = sum(node.op == "call_function" and "executorch_call_delegate" in str(node.target)
                    for node in lowered.exported_program().graph.nodes)
    program = lowered.to_executorch()
    with open(args.out, "wb") as f:
        program.write_to_file(f)
    print(json.dumps({"int8_seconds": time.perf_counter() - start, "delegate_calls": delegated}))


if __name__ == "__main__":
    main()
