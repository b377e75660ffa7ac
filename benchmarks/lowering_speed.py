"""Single-layer LiteRT timings: a native KxK depthwise conv vs the same conv decomposed into
<=5x5 pieces (mixdeploy's `decompose` lowering), fp32 and int8, XNNPACK, 1 thread.

    python benchmarks/lowering_speed.py [--hw 56] [--channels 480] [--kernels 7 9 11] [--rounds 20]

Every model is built from ONNX by the same code the rewrite uses (lowering.py), translated
to TensorFlow op for op and converted with tf.lite.TFLiteConverter (policy.py). Models run
interleaved; the table shows medians and native/decomposed ratios (>1: decomposed faster).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import onnx
from onnx import TensorProto, helper

from mixdeploy.onnx import policy
from mixdeploy.onnx.graph import Namer, conv_info, to_ir, to_proto
from mixdeploy.onnx.lowering import decompose_depthwise_conv, kernel_tiles


def depthwise_model(channels: int, hw: int, k: int, stride: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((channels, 1, k, k)).astype(np.float32) / k
    bias = rng.standard_normal(channels).astype(np.float32) * 0.1
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=channels, kernel_shape=[k, k],
                            pads=[k // 2] * 4, strides=[stride, stride], name="dw")
    graph = helper.make_graph([node], "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
                              [onnx.numpy_helper.from_array(weight, "w"), onnx.numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def decomposed(model: onnx.ModelProto, odd_pieces: bool) -> onnx.ModelProto:
    ir_model = to_ir(model)
    conv = conv_info(next(iter(ir_model.graph)))
    decompose_depthwise_conv(ir_model.graph, Namer(ir_model.graph), conv, odd_pieces=odd_pieces)
    return to_proto(ir_model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hw", type=int, default=56)
    parser.add_argument("--channels", type=int, default=480)
    parser.add_argument("--kernels", type=int, nargs="+", default=[5, 7, 9, 11])
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()

    print(f"depthwise {args.hw}x{args.hw}x{args.channels}, stride {args.stride}; LiteRT "
          f"{policy.runtime_id('fp32').split('-')[1]}, XNNPACK, 1 thread, median of {args.rounds}")
    print(f"{'kernel':>7} {'prec':>5} {'pieces':>6} {'native ms':>10} {'odd ms':>8} {'ratio':>6} "
          f"{'exact ms':>9} {'ratio':>6}")
    for precision in args.precisions:
        for k in args.kernels:
            native = depthwise_model(args.channels, args.hw, k, args.stride)
            models = {"native": policy.tflite_from_onnx_layer(native, precision)}
            if k > 5:
                # odd: pieces zero-padded to 3x3/5x5 (the default); exact: pieces of exactly their taps (5x4, 4x4)
                models["odd"] = policy.tflite_from_onnx_layer(decomposed(native, True), precision)
                models["exact"] = policy.tflite_from_onnx_layer(decomposed(native, False), precision)
            ms = policy.time_tflite_models(models, rounds=args.rounds)
            nan = float("nan")
            cells = [f"{ms.get(v, nan):>8.2f} {ms['native'] / ms[v] if v in ms else nan:>6.2f}" for v in ("odd", "exact")]
            print(f"{k}x{k:<5} {precision:>5} {len(kernel_tiles((k, k))):>6} {ms['native']:>10.2f} "
                  f"{cells[0]} {cells[1]:>16}", flush=True)


if __name__ == "__main__":
    main()
