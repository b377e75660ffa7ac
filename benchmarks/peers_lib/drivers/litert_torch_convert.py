"""Runs inside .venv-litert-torch (see benchmarks/setup_peers.sh): one of our MixNets through litert-torch.

Full-integer int8 the way litert-torch's own tests do it: PT2E with its PT2EQuantizer
(per-channel symmetric weights, static activations), prepare_pt2e, calibration on the given
images, convert_pt2e(fold_quantize=False), then litert_torch.convert with the quantizer.
With --out-fp32 also the float model (litert_torch.convert). Prints one JSON line of times.
"""

import argparse
import json
import time

import numpy as np
import torch

import litert_torch
from litert_torch.quantize import pt2e_quantizer, quant_config
from torchao.quantization.pt2e import quantize_pt2e

from mixdeploy.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="a load_model source: a mixdeploy checkpoint or a model name")
    parser.add_argument("--weights")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--calib", required=True, help=".npy, NCHW float32, preprocessed")
    parser.add_argument("--out-int8", required=True)
    parser.add_argument("--out-fp32")
    args = parser.parse_args()

    torch.set_num_threads(2)
    loaded = load_model(args.model, weights=args.weights, input_size=args.input_size)
    module, size = loaded.module.eval(), loaded.preprocessing.input_size
    sample = (torch.zeros(1, 3, size, size),)
    times = {}

    if args.out_fp32:
        start = time.perf_counter()
        litert_torch.convert(module, sample).export(args.out_fp32)
        times["fp32_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    exported = torch.export.export(module, sample).module()
    prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for image in np.load(args.calib):
            prepared(torch.from_numpy(image[None]))
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    litert_torch.convert(quantized, sample,
                         quant_config=quant_config.QuantConfig(pt2e_quantizer=quantizer)).export(args.out_int8)
    times["int8_seconds"] = time.perf_counter() - start
    print(json.dumps(times))


if __name__ == "__main__":
    main()
