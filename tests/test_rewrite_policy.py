"""The decompose tiling, the `auto` policy (single-layer candidates built by the rewrite and the
project's converter, timed by the host bench; cache), and tuned choices taking precedence."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mixdeploy.onnx import policy
from mixdeploy.onnx.lowering import LOWERINGS, MAX_FAST_TAPS, grid_tiles, kernel_tiles, tiling_cost
from mixdeploy.onnx.passes.recognize_mixconv import MixConvSpec
from mixdeploy.onnx.rewrite import rewrite
from rewrite_helpers import GraphBuilder, assert_same_function, rel_err, run_ort


@pytest.mark.parametrize("kernel", [(k, k) for k in range(1, 16)] + [(3, 9), (9, 3), (1, 31), (7, 5)])
@pytest.mark.parametrize("tiler", [kernel_tiles, grid_tiles])
def test_tiles_cover_every_tap_once_with_fast_pieces(kernel, tiler):
    cover = np.zeros(kernel, int)
    for r0, r1, c0, c1 in tiler(kernel):
        assert 0 < (r1 - r0) * (c1 - c0) <= MAX_FAST_TAPS
        cover[r0:r1, c0:c1] += 1
    assert (cover == 1).all()


def test_tiling_needs_few_pieces_and_never_costs_more_than_the_grid():
    # lower bound: ceil(k*k / 25) pieces of at most 25 taps
    assert [len(kernel_tiles((k, k))) for k in (3, 5, 7, 9, 11)] == [1, 1, 3, 4, 6]
    for k in range(1, 16):
        assert len(kernel_tiles((k, k))) >= -(-k * k // MAX_FAST_TAPS)
        assert tiling_cost(kernel_tiles((k, k))) <= tiling_cost(grid_tiles((k, k)))


def spec(channels=(8, 8), kernels=(3, 9), stride=1, hw=10):
    return MixConvSpec(name="layer", channels=list(channels), kernels=[[k, k] for k in kernels],
                       strides=[stride, stride], pads=[[k // 2] * 4 for k in kernels], dilations=[1, 1],
                       input_hw=[hw, hw], output_hw=None)


@pytest.mark.parametrize("lowering", LOWERINGS)
def test_candidates_are_the_converters_tflite_of_the_rewritten_layer(lowering):
    """What auto times is what ships: the rewrite's lowering, converted by convert_onnx."""
    from ai_edge_litert.interpreter import Interpreter

    layer = policy.mixconv_layer_model(spec(kernels=(3, 7), stride=2))
    lowered, applied = policy.lower_single_layer(layer, lowering)
    assert applied == lowering
    x = np.random.default_rng(0).standard_normal((1, 16, 10, 10)).astype(np.float32)
    ref = run_ort(layer, x)
    interp = Interpreter(model_content=policy.candidate_tflite(lowered, "fp32"), num_threads=1)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x.transpose(0, 2, 3, 1))
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"]).transpose(0, 3, 1, 2)
    assert rel_err(ref, got) < 1e-5
    ops = {op["op_name"] for op in interp._get_ops_details()}
    # the lowering's structure survives conversion: decomposed 7x7 = slices + adds, pad = no split
    assert ("STRIDED_SLICE" in ops) == (lowering in ("decompose", "pad_decompose"))
    assert ("SPLIT" in ops) == (lowering in ("split", "decompose"))


def test_int8_candidate_uses_the_project_quantizer():
    from ai_edge_litert.interpreter import Interpreter

    lowered, _ = policy.lower_single_layer(policy.mixconv_layer_model(spec(kernels=(3, 9))), "decompose")
    interp = Interpreter(model_content=policy.candidate_tflite(lowered, "int8"))
    tensors = interp.get_tensor_details()
    assert interp.get_input_details()[0]["dtype"] == np.int8
    # per-channel int8 weights on every depthwise conv (the MLIR quantizer's output, as convert_onnx ships)
    weights = [t for t in tensors if len(t["shape"]) == 4 and t["shape"][0] == 1 and t["dtype"] == np.int8
               and len(t["quantization_parameters"]["scales"]) > 1]
    assert len(weights) >= 5      # 3x3 + four 9x9 pieces


def test_measure_layer_times_each_distinct_candidate_with_the_host_bench(monkeypatch):
    from mixdeploy.bench import host

    timed = []
    real = host.bench_models
    monkeypatch.setattr(host, "bench_models", lambda models, **kw: timed.append(sorted(models)) or real(models, **kw))
    timings = policy.measure_layer(spec(kernels=(3, 5)), "fp32", rounds=3)
    # decompose/pad_decompose of a 3/5 layer are not distinct graphs: not measured
    assert set(timings) == {"split", "pad"} and all(t > 0 for t in timings.values())
    assert timed == [["pad", "split"]]          # one interleaved run of both candidates


def test_pick_fastest_prefers_simpler_lowering_within_noise():
    assert policy.pick_fastest({"split": 1.02, "pad": 1.0}) == "split"
    assert policy.pick_fastest({"split": 2.0, "pad": 1.9, "decompose": 1.0}) == "decompose"


def test_auto_caches_per_runtime_and_signature(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXDEPLOY_CACHE_DIR", str(tmp_path))
    calls = []

    def fake_measure(s, precision, candidates):
        calls.append((s.signature, precision))
        return {"split": 2.0, "decompose": 1.0} if max(k[0] for k in s.kernels) > 5 else {"split": 1.0, "pad": 3.0}

    monkeypatch.setattr(policy, "measure_layer", fake_measure)
    specs = [spec(kernels=(3, 9)), spec(kernels=(3, 9)), spec(kernels=(3, 5))]
    progress = []
    choices = policy.choose_lowerings(specs, "int8", progress=lambda *a: progress.append(a))
    assert len(calls) == 2 and {p for _, p in calls} == {"int8"}
    assert choices == {specs[0].signature: "decompose", specs[2].signature: "split"}
    assert progress[-1][:2] == (2, 2)
    cache_file = tmp_path / "lowering" / f"{policy.runtime_id('int8')}.json"
    assert json.loads(cache_file.read_text())[specs[0].signature]["choice"] == "decompose"
    assert policy.choose_lowerings(specs, "int8") == choices and len(calls) == 2  # cache hit: no measuring
    policy.choose_lowerings(specs, "fp32")
    assert len(calls) == 4  # another runtime id measures again


def test_rewrite_auto_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXDEPLOY_CACHE_DIR", str(tmp_path))
    g = GraphBuilder(channels=16, hw=10)
    model = g.model(g.mixconv("x", [8, 8], [3, 9]))
    seen = []
    result = rewrite(model, lowering="auto", progress=lambda done, total, name: seen.append((done, total)))
    assert seen[-1] == (1, 1)
    assert set(result.report.lowering_choices.values()) <= set(LOWERINGS)
    x = np.random.default_rng(0).standard_normal((1, 16, 10, 10)).astype(np.float32)
    assert_same_function(model, result.model, [x])


def test_tuned_choices_win_and_the_rest_is_measured_here(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXDEPLOY_CACHE_DIR", str(tmp_path))
    measured = []
    monkeypatch.setattr(policy, "measure_layer",
                        lambda s, precision, candidates: measured.append(s.signature) or {"split": 1.0, "pad": 2.0})
    tuned_spec, other = replace(spec(kernels=(3, 9)), name="big"), replace(spec(kernels=(3, 5)), name="small")
    tuned = policy.TunedChoices(precision="int8", choices={tuned_spec.signature: "pad"}, source="t.json")
    with policy.use_tuned(tuned):
        choices = policy.choose_lowerings([tuned_spec, other], "int8")
    assert choices == {tuned_spec.signature: "pad", other.signature: "split"}
    assert measured == [other.signature]
    assert tuned.from_tune == {"big": "pad"} and tuned.measured_here == ["small"]
    assert policy.choose_lowerings([tuned_spec], "int8") == {tuned_spec.signature: "split"}  # outside: host
    with policy.use_tuned(tuned), pytest.raises(Exception, match="measured for int8.*--precision fp32"):
        policy.choose_lowerings([tuned_spec], "fp32")
