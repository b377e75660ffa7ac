"""Single-layer LiteRT timings: a native KxK depthwise conv vs the same conv decomposed into
<=5x5 pieces (mixdeploy's `decompose` lowering), fp32 and int8, XNNPACK, 1 thread.

    python benchmarks/lowering_speed.py [--hw 56] [--channels 480] [--kernels 7 9 11] [--rounds 20]
    python benchmarks/lowering_speed.py --whole mixnet-s [--size 224]   # every lowering, whole network
    python benchmarks/lowering_speed.py --block-table                  # docs/rewrites.md's pass table

Every model is built from ONNX by the same code the rewrite uses (lowering.py) and converted
by the project's converter (convert_onnx, via policy.candidate_tflite; int8 calibrated on random
inputs). Models run interleaved (bench.host.bench_models); the table shows medians and
native/decomposed ratios (>1: decomposed faster).
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
from mixdeploy.onnx.lowering import decompose_depthwise_conv, grid_tiles, kernel_tiles


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


def decomposed(model: onnx.ModelProto, tiles) -> onnx.ModelProto:
    ir_model = to_ir(model)
    conv = conv_info(next(iter(ir_model.graph)))
    decompose_depthwise_conv(ir_model.graph, Namer(ir_model.graph), conv, tiles=tiles)
    return to_proto(ir_model)


def interleaved_medians(models: dict[str, bytes], rounds: int) -> dict[str, float]:
    """Median ms per model, 1 thread, the models timed in one interleaved run."""
    from mixdeploy.bench.host import bench_models

    return {name: ms["1"] for name, ms in bench_models(models, threads=(1,), runs=rounds, warmup=2).items()}


def whole_network(name: str, size: int, precisions, rounds: int, calibration_images: int = 8) -> None:
    """Convert the whole network once per lowering (mixdeploy.tflite.convert_onnx) and time them."""
    import tempfile
    from pathlib import Path

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx
    from mixdeploy.onnx.rewrite import rewrite
    from mixdeploy.tflite.convert import convert_onnx

    tmp = Path(tempfile.mkdtemp())
    export_onnx(load_model(name).module, size, tmp / "model.onnx")
    exported = onnx.load(tmp / "model.onnx")
    calibration = np.random.default_rng(0).standard_normal((calibration_images, 3, size, size)).astype(np.float32)
    print(f"{name} at {size}, LiteRT XNNPACK 1 thread, median of {rounds} interleaved runs")
    print(f"{'precision':>9} {'lowering':>14} {'ms':>8} {'split/this':>10}")
    for precision in precisions:
        models = {}
        for lowering in ("split", "pad", "decompose", "pad_decompose", "auto"):
            rewritten = rewrite(exported, lowering=lowering, runtime=precision).model
            out = convert_onnx(rewritten, tmp / f"{lowering}_{precision}.tflite", precision=precision,
                               calibration=calibration if precision == "int8" else None)
            models[lowering] = Path(out.path).read_bytes()
        ms = interleaved_medians(models, rounds)
        for lowering, t in ms.items():
            print(f"{precision:>9} {lowering:>14} {t:>8.2f} {ms['split'] / t:>10.2f}", flush=True)


def block_table(name: str = "tf-mixnet-s", first: str = "blocks.4.1.conv_pw/Split",
                last: str = "blocks.5.0.conv_pwl", lowering: str = "decompose") -> None:
    """Markdown op histogram after each pass for one stretch of blocks (Pads kept visible)."""
    import tempfile
    from pathlib import Path

    import onnx.utils
    import onnxsim

    from mixdeploy.models import load_model
    from mixdeploy.onnx.export import export_onnx, rename_nodes_by_module_path
    from mixdeploy.onnx.graph import count_graph_macs, op_histogram
    from mixdeploy.onnx.rewrite import rewrite

    tmp = Path(tempfile.mkdtemp())
    export_onnx(load_model(name).module, 224, tmp / "raw.onnx", simplify=False)
    model, _ = onnxsim.simplify(onnx.load(tmp / "raw.onnx"), skipped_optimizers=["fuse_pad_into_conv"])
    rename_nodes_by_module_path(model)
    nodes = {n.name: n for n in model.graph.node}
    onnx.save(model, tmp / "sim.onnx")
    onnx.utils.extract_model(str(tmp / "sim.onnx"), str(tmp / "blk.onnx"), [nodes[first].input[0]], [nodes[last].output[0]])
    block = onnx.load(tmp / "blk.onnx")
    report = rewrite(block, lowering=lowering).report
    cols = [("export", op_histogram(block), count_graph_macs(block))] + [(p.name, p.ops_after, p.macs_after) for p in report.passes]
    print("| op | " + " | ".join(c[0] for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for op in sorted(set().union(*[c[1] for c in cols])):
        print(f"| {op} | " + " | ".join(str(c[1].get(op, 0)) for c in cols) + " |")
    print("| **nodes** | " + " | ".join(str(sum(c[1].values())) for c in cols) + " |")
    print("| MMACs | " + " | ".join(f"{c[2] / 1e6:.2f}" for c in cols) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hw", type=int, default=56)
    parser.add_argument("--channels", type=int, default=480)
    parser.add_argument("--kernels", type=int, nargs="+", default=[5, 7, 9, 11])
    parser.add_argument("--stride", type=int, default=1)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--whole", metavar="MODEL", help="time every lowering of a whole network instead")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--block-table", action="store_true", help="print docs/rewrites.md's per-pass op table")
    args = parser.parse_args()
    if args.block_table:
        return block_table()
    if args.whole:
        return whole_network(args.whole, args.size, args.precisions, args.rounds)

    print(f"depthwise {args.hw}x{args.hw}x{args.channels}, stride {args.stride}; LiteRT "
          f"{policy.runtime_id('fp32').split('-')[1]}, XNNPACK, 1 thread, median of {args.rounds}")
    print("ratio = native / decomposed (>1: decomposed faster); tiled = mixdeploy's tiling, grid = <=5x5 grid")
    print(f"{'kernel':>7} {'prec':>5} {'native ms':>10} {'pieces':>6} {'tiled ms':>9} {'ratio':>6} "
          f"{'pieces':>6} {'grid ms':>8} {'ratio':>6}")
    for precision in args.precisions:
        for k in args.kernels:
            native = depthwise_model(args.channels, args.hw, k, args.stride)
            models = {"native": policy.candidate_tflite(native, precision)}
            tilings = {"tiled": kernel_tiles((k, k)), "grid": grid_tiles((k, k))}
            if k > 5:
                for name, tiles in tilings.items():
                    models[name] = policy.candidate_tflite(decomposed(native, tiles), precision)
            ms = interleaved_medians(models, args.rounds)
            nan = float("nan")
            cells = [f"{len(tilings[v]):>6} {ms.get(v, nan):>8.2f} {ms['native'] / ms[v] if v in ms else nan:>6.2f}"
                     for v in ("tiled", "grid")]
            print(f"{k}x{k:<5} {precision:>5} {ms['native']:>10.2f} {cells[0]} {cells[1]}", flush=True)


if __name__ == "__main__":
    main()
