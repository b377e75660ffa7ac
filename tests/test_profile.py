"""`mixdeploy profile`: per-op and per-class times of a .tflite, ceilings, roofline (tiny models)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench_tiny_model import build_tiny_tflite
from cli import cli
from mixdeploy.bench import profile as prof
from mixdeploy.bench.attribution import ModelOp, model_ops

FAKE_TOOL = Path(__file__).parent / "data" / "fake_benchmark_model.py"
SIZE = 48      # big enough that every op takes more than an invoke's overhead, small enough to be quick


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_tflite(tmp_path_factory.mktemp("prof") / "tiny.tflite", size=SIZE)


@pytest.fixture(scope="module")
def tiny_int8(tmp_path_factory):
    return build_tiny_tflite(tmp_path_factory.mktemp("prof8") / "tiny_int8.tflite", int8=True, size=SIZE)


@pytest.fixture(scope="module")
def host_profile(tiny_int8):
    return prof.profile_host(tiny_int8, runs=15, warmup=2)


def test_classes_of_mixnet_ops():
    def op(name, outputs, kernel=None):
        return prof.op_class(ModelOp(0, name, outputs, kernel))

    # names as the converter writes them for MixNet-S (see docs/bench.md)
    assert op("CONV_2D", ["blocks.1.0.conv_pw/BiasAdd;blocks.1.0.conv_pw/Conv2D"], (1, 1)) == prof.POINTWISE
    assert op("FULLY_CONNECTED", ["classifier/MatMul"]) == prof.POINTWISE
    assert op("CONV_2D", ["bn1.act/Relu/Relu;conv_stem/BiasAdd"], (3, 3)) == prof.CONV
    assert op("DEPTHWISE_CONV_2D", ["blocks.2.0.conv_dw.1/BiasAdd"], (5, 5)) == prof.DEPTHWISE
    assert op("DEPTHWISE_CONV_2D", ["blocks.2.0.conv_dw.2/BiasAdd"], (7, 7)) == prof.DEPTHWISE_LARGE
    assert op("DEPTHWISE_CONV_2D", ["blocks.2.0.conv_dw.2/piece0/DepthwiseConv2dNative"], (7, 3)) == prof.DECOMPOSED
    assert op("STRIDED_SLICE", ["blocks.2.0.conv_dw.2/piece1/Slice/strided_slice"]) == prof.DECOMPOSED
    assert op("ADD", ["blocks.2.0.conv_dw.2/piece2/Add/Add"]) == prof.DECOMPOSED
    assert op("CONV_2D", ["blocks.2.0.se.conv_reduce/BiasAdd"], (1, 1)) == prof.SE
    assert op("MUL", ["blocks.2.0.se/Mul/Mul"]) == prof.SE
    assert op("MEAN", ["blocks.2.0.se/ReduceMean/Mean"]) == prof.SE
    assert op("LOGISTIC", ["blocks.2.0.bn1.act/Sigmoid/Sigmoid"]) == prof.ELEMENTWISE
    assert op("ADD", ["blocks.1.1/Add/Add"]) == prof.ELEMENTWISE
    for name in ("PAD", "SPLIT", "CONCATENATION"):
        assert op(name, ["blocks.2.0.conv_dw/x"]) == prof.DATA_MOVEMENT
    assert op("MEAN", ["global_pool/Mean"]) == prof.OTHER
    # "se" must be a scope segment, not any substring (a layer called "base" is no SE)
    assert op("CONV_2D", ["base.conv/BiasAdd"], (1, 1)) == prof.POINTWISE


def test_macs_of_the_tiny_models_ops(tiny):
    model = prof.read_flatbuffer(tiny)
    graph = model.subgraphs[0].operators
    by_name = {op.op_name + str(op.kernel or ""): prof.op_macs(model, graph[op.index]) for op in model_ops(tiny)}
    # conv_stem 3x3, 3 -> 8 channels, SAME: every output pixel of 8 channels has 27 MACs
    assert by_name["CONV_2D(3, 3)"] == SIZE * SIZE * 8 * 27
    assert by_name["DEPTHWISE_CONV_2D(3, 3)"] == SIZE * SIZE * 4 * 9
    assert by_name["DEPTHWISE_CONV_2D(7, 7)"] == SIZE * SIZE * 4 * 49
    assert by_name["FULLY_CONNECTED"] == 8 * 10
    assert by_name["CONCATENATION"] == 0


def test_single_op_model_computes_what_the_op_computes_in_the_model(tiny):
    from ai_edge_litert.interpreter import Interpreter

    whole = Interpreter(model_path=str(tiny), experimental_preserve_all_tensors=True)
    whole.allocate_tensors()
    x = np.random.default_rng(1).standard_normal(whole.get_input_details()[0]["shape"]).astype(np.float32)
    whole.set_tensor(whole.get_input_details()[0]["index"], x)
    whole.invoke()
    model = prof.read_flatbuffer(tiny)
    tensors = model.subgraphs[0].tensors
    dw7 = next(op for op in model_ops(tiny) if op.kernel == (7, 7))
    fb_op = model.subgraphs[0].operators[dw7.index]
    [one] = [Interpreter(model_content=prof.single_op_model(model, dw7.index))]
    one.allocate_tensors()
    [inp] = one.get_input_details()
    one.set_tensor(inp["index"], whole.get_tensor(fb_op.inputs[0]))
    one.invoke()
    expected = whole.get_tensor(fb_op.outputs[0])
    got = one.get_tensor(one.get_output_details()[0]["index"])
    assert tensors[fb_op.outputs[0]].name.decode() in dw7.outputs
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    big = Interpreter(model_content=prof.single_op_model(model, dw7.index, scale=3))
    big.allocate_tensors()
    assert list(big.get_output_details()[0]["shape"]) == [1, 3 * SIZE, 3 * SIZE, 4]


def test_op_times_sum_to_about_the_whole_model(host_profile):
    r = host_profile
    assert len(r.ops) == len(model_ops(r.model_path)) and r.whole_ms > 0
    # Single ops miss cross-op fusion and cache reuse, and carry their own per-op overhead: a loose bound.
    assert 0.3 < r.sum_ops_ms / r.whole_ms < 3.0, (r.sum_ops_ms, r.whole_ms)
    assert r.invoke_overhead_ms < r.whole_ms


def test_gmacs_and_roofline_are_macs_over_time(host_profile):
    r = host_profile
    for op in r.ops:
        if op.macs and op.ms > 0:
            assert op.gmacs == pytest.approx(op.macs / (op.ms * 1e6))
        else:
            assert op.gmacs is None
    by_class = {c.op_class: c for c in r.classes}
    assert sum(c.ops for c in r.classes) == len(r.ops)
    assert sum(c.ms for c in r.classes) == pytest.approx(r.sum_ops_ms)
    assert by_class[prof.DEPTHWISE_LARGE].macs == SIZE * SIZE * 4 * 49
    for c in r.classes:
        assert c.macs == sum(op.macs for op in r.ops if op.op_class == c.op_class)
        if c.macs:
            assert c.ceiling_gmacs > 0 and c.ceiling_op.startswith("op ")
            timed = [op.gmacs for op in r.ops if op.op_class == c.op_class and op.gmacs
                     and op.ms >= prof.RELIABLE_OVER_OVERHEAD * r.invoke_overhead_ms]
            assert c.ceiling_gmacs >= max(timed, default=0)
            assert c.roofline_ms == pytest.approx(c.macs / (c.ceiling_gmacs * 1e6))
        else:
            assert c.roofline_ms == 0.0 and c.ceiling_gmacs is None
    assert r.roofline_ms == pytest.approx(sum(c.roofline_ms for c in r.classes))


def test_bytes_of_ops_count_activations_not_constants(tiny_int8):
    model = prof.read_flatbuffer(tiny_int8)
    graph = model.subgraphs[0]
    for op in model_ops(tiny_int8):
        fb_op = graph.operators[op.index]
        if op.op_name == "CONCATENATION":
            # int8: every input and the output once, one byte per element
            sizes = [int(np.prod(graph.tensors[i].shape)) for i in list(fb_op.inputs) + list(fb_op.outputs)]
            assert prof.op_bytes(model, fb_op) == sum(sizes)
        if op.op_name == "DEPTHWISE_CONV_2D":
            # the weights and the int32 bias are constants: only the input and output count
            x, y = (int(np.prod(graph.tensors[i].shape)) for i in (fb_op.inputs[0], fb_op.outputs[0]))
            assert prof.op_bytes(model, fb_op) == x + y


@pytest.fixture(scope="module")
def wide_profile(tmp_path_factory):
    # 16x the pixels of the tiny model: its concat takes over 10 invoke costs on every machine CI has met
    # (at 4x it did not on an AMD EPYC: 0.053 ms against 10 x 0.0042)
    return prof.profile_host(build_tiny_tflite(tmp_path_factory.mktemp("wide") / "wide.tflite", int8=True,
                                               size=4 * SIZE), runs=9, warmup=2)


def test_data_floor_is_bytes_over_the_best_mac_less_rate(wide_profile):
    r = wide_profile
    mac_less = [op for op in r.ops if not op.macs and op.bytes and op.folded_into is None
                and op.ms >= prof.RELIABLE_OVER_OVERHEAD * r.invoke_overhead_ms]
    assert mac_less, "the tiny model's concat must time well over an invoke"
    assert r.bandwidth_gbs == pytest.approx(max(op.gbs for op in mac_less))
    for op in mac_less:
        # no op is faster than the floor, so no op's floor exceeds its own time
        assert op.data_floor_ms(r.bandwidth_gbs) <= op.ms * (1 + 1e-9)
    for c in r.classes:
        members = [op for op in r.ops if op.op_class == c.op_class]
        assert c.data_floor_ms == pytest.approx(sum(op.bytes / (r.bandwidth_gbs * 1e6) for op in members
                                                    if not op.macs and op.folded_into is None))
    assert r.floor_ms == pytest.approx(r.roofline_ms + r.data_floor_ms)
    assert r.data_floor_ms > 0


def test_cli_json_schema_and_table(tiny_int8):
    runner = CliRunner()
    out = runner.invoke(cli, ["profile", str(tiny_int8), "--json", "--runs", "3", "--warmup", "1"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert {"model_path", "source", "threads", "whole_ms", "ops", "classes", "sum_ops_ms", "roofline_ms",
            "sum_ops_over_whole", "whole_over_roofline", "invoke_overhead_ms", "host", "bandwidth_gbs",
            "data_floor_ms", "floor_ms", "whole_over_floor"} <= set(payload)
    assert {"index", "op_name", "op_class", "name", "macs", "ms", "gmacs", "delegated", "bytes", "gbs"} <= \
        set(payload["ops"][0])
    assert {"op_class", "ops", "ms", "macs", "gmacs", "ceiling_gmacs", "ceiling_op", "roofline_ms",
            "data_floor_ms"} <= set(payload["classes"][0])
    # whether an op without MACs of the 48-px model runs long enough over an invoke to measure a bandwidth on
    # depends on the machine: either way the floor must follow from the bandwidth
    if payload["bandwidth_gbs"] is None:
        assert payload["floor_ms"] is None and payload["whole_over_floor"] is None
    else:
        assert payload["floor_ms"] == pytest.approx(payload["roofline_ms"] + payload["data_floor_ms"])
        assert payload["whole_over_floor"] == pytest.approx(payload["whole_ms"] / payload["floor_ms"])
    assert payload["sum_ops_over_whole"] == pytest.approx(payload["sum_ops_ms"] / payload["whole_ms"])
    table = runner.invoke(cli, ["profile", str(tiny_int8), "--runs", "2", "--warmup", "0", "--top", "3"])
    assert table.exit_code == 0, table.output
    assert "depthwise > 25 taps" in table.stdout and "roofline" in table.stdout and "slowest 3 ops" in table.stdout


def test_cli_errors(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a model")
    out = CliRunner().invoke(cli, ["profile", str(bad)])
    assert out.exit_code == 2 and "not a TFLite model" in out.output
    missing = CliRunner().invoke(cli, ["profile", str(bad), "--from-op-profile", str(tmp_path / "none.json")])
    assert missing.exit_code == 2 and "no such file" in missing.output


def test_phone_op_profile_goes_into_the_same_table(tiny, tmp_path):
    # The emulated phone's benchmark_model (XNNPACK partition rows, as the real tool prints them),
    # with modelled op costs so the class sums are known: a 7x7 depthwise 0.05 ms per channel.
    (tmp_path / "op_costs.json").write_text(json.dumps(
        {"depthwise_ms_per_channel": {"7x7": 0.05, "default": 0.001}, "other_ms": 0.002}))
    env = {**os.environ, "EMULATED_DEVICE_SANDBOX": str(tmp_path)}
    text = subprocess.run([sys.executable, str(FAKE_TOOL), f"--graph={tiny}", "--enable_op_profiling=true",
                           "--num_runs=2", "--warmup_runs=1"], env=env, capture_output=True, text=True,
                          check=True).stdout
    log = tmp_path / "bench.txt"
    log.write_text(text)
    result = prof.load_op_profile(log, tiny)
    by_class = {c.op_class: c for c in result.classes}
    assert by_class[prof.DEPTHWISE_LARGE].ms == pytest.approx(0.05 * 4)
    assert by_class[prof.DEPTHWISE].ms == pytest.approx(0.001 * 4)
    assert by_class[prof.DEPTHWISE_LARGE].gmacs == pytest.approx(SIZE * SIZE * 4 * 49 / (0.2 * 1e6))
    assert result.sum_ops_ms == pytest.approx(result.whole_ms, rel=0.05)
    assert all(c.ceiling_gmacs is None for c in result.classes)

    # the same from `mixdeploy bench --json` output (its results carry the parsed rows)
    from dataclasses import asdict

    from mixdeploy.bench.parse import parse_benchmark_output

    bench_json = {"results": [{"model_path": str(tiny), "threads": 1, "delegate": "xnnpack",
                               "device": {"model": "Pixel 7"}, "benchmark": asdict(parse_benchmark_output(text))}]}
    saved = tmp_path / "bench.json"
    saved.write_text(json.dumps(bench_json))
    out = CliRunner().invoke(cli, ["profile", str(tiny), "--from-op-profile", str(saved), "--json"])
    assert out.exit_code == 0, out.output
    payload = json.loads(out.stdout)
    assert "Pixel 7" in payload["source"]
    assert {c["op_class"]: c["ms"] for c in payload["classes"]}[prof.DEPTHWISE_LARGE] == pytest.approx(0.2)


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    """PyTorch-style stride-2 conv (PAD -> CONV_2D, which XNNPACK folds) and a PAD shared by two
    window slices (what `decompose` wrote before piece_pads: a real copy)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w3, dw = (tf.constant(rng.standard_normal(s).astype(np.float32)) for s in ((3, 3, 3, 8), (3, 3, 8, 1)))

    @tf.function(input_signature=[tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32)])
    def net(x):
        y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]]), w3, 2, "VALID")
        p = tf.pad(y, [[0, 0], [2, 2], [2, 2], [0, 0]])
        h = SIZE // 2
        a = tf.nn.depthwise_conv2d(p[:, :h + 2, :h + 2], dw, [1, 1, 1, 1], "VALID")
        b = tf.nn.depthwise_conv2d(p[:, 2:, 2:], dw, [1, 1, 1, 1], "VALID")
        return a + b

    path = tmp_path_factory.mktemp("pad") / "padded.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()]).convert())
    return path


def test_a_pad_xnnpack_folds_is_timed_with_its_conv(padded):
    from ai_edge_litert.interpreter import Interpreter

    ops = model_ops(padded)
    model = prof.read_flatbuffer(padded)
    pads = [op.index for op in ops if op.op_name == "PAD"]
    assert len(pads) == 2
    stem_pad, shared_pad = pads
    conv = prof.folded_pad_consumer(model, stem_pad)
    assert ops[conv].op_name == "CONV_2D"
    assert prof.folded_pad_consumer(model, shared_pad) is None        # two readers: XNNPACK must copy it

    # the PAD + CONV model computes what the two ops compute in the whole model
    whole = Interpreter(model_path=str(padded), experimental_preserve_all_tensors=True)
    whole.allocate_tensors()
    x = np.random.default_rng(1).standard_normal(whole.get_input_details()[0]["shape"]).astype(np.float32)
    whole.set_tensor(whole.get_input_details()[0]["index"], x)
    whole.invoke()
    pair = Interpreter(model_content=prof.ops_model(model, [stem_pad, conv]))
    pair.allocate_tensors()
    pair.set_tensor(pair.get_input_details()[0]["index"], x)
    pair.invoke()
    conv_out = model.subgraphs[0].operators[conv].outputs[0]
    np.testing.assert_allclose(pair.get_tensor(pair.get_output_details()[0]["index"]), whole.get_tensor(conv_out),
                               rtol=1e-5, atol=1e-5)

    r = prof.profile_host(padded, runs=5, warmup=1)
    by_index = {op.index: op for op in r.ops}
    assert by_index[stem_pad].folded_into == conv and by_index[shared_pad].folded_into is None
    assert any("folds into the conv" in note for note in r.notes)
