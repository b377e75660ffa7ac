"""benchmark_model output parsers, on the three real logs in tests/data/benchmark_model_samples/
(numbers asserted are the ones printed in those files) and on format variants from tflite.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixdeploy.bench.parse import parse_benchmark_output, parse_count_line, parse_op_profile

SAMPLES = Path(__file__).parent / "data" / "benchmark_model_samples"


def sample(name: str) -> str:
    return (SAMPLES / name).read_text()


def test_classic_android_2020_with_op_profiling_header():
    out = parse_benchmark_output(sample("classic_android_op_profiling_2020.txt"))
    assert out.tool == "classic"
    assert out.model_size_mb == pytest.approx(0.004448)
    assert out.init_ms == pytest.approx(0.855)
    assert out.threads == 4
    assert (out.warmup.count, out.warmup.first_ms, out.warmup.avg_ms) == (15, pytest.approx(49.060), pytest.approx(34.8251))
    inf = out.inference
    assert inf.count == 50
    assert (inf.first_ms, inf.curr_ms, inf.min_ms, inf.max_ms) == pytest.approx((32.891, 33.978, 32.641, 34.005))
    assert (inf.avg_ms, inf.std_ms) == pytest.approx((33.2094, 0.450))
    assert out.median_ms == pytest.approx(33.2094)            # no percentiles printed: the mean
    assert out.first_inference_ms == pytest.approx(49.060)
    assert (out.init_memory_mb, out.overall_memory_mb) == (0.0, pytest.approx(12.8672))   # older "Peak memory footprint"
    assert out.op_profile == []          # only the init profile's header is in the log


def test_classic_linux_with_info_prefix():
    out = parse_benchmark_output(sample("classic_info_prefix_linux.txt"))
    assert out.tool == "classic"
    assert out.model_size_mb == pytest.approx(4.27635)
    assert out.init_ms == pytest.approx(0.53)
    assert (out.warmup.count, out.warmup.avg_ms) == (5, pytest.approx(117.225))
    assert (out.inference.count, out.inference.min_ms, out.inference.max_ms) == (50, pytest.approx(111.222), pytest.approx(121.324))
    assert out.avg_ms == pytest.approx(116.066) and out.inference.std_ms == pytest.approx(1.906)
    assert (out.init_memory_mb, out.overall_memory_mb) == (pytest.approx(3.75), pytest.approx(12.1914))


def test_litert_compiled_model_in_milliseconds():
    out = parse_benchmark_output(sample("litert_compiled_model.txt"))
    assert out.tool == "litert"
    assert out.init_ms == pytest.approx(23744.73)
    assert out.first_inference_ms == pytest.approx(7441.04)
    assert (out.warmup.count, out.warmup.avg_ms) == (1, pytest.approx(7441.04))
    inf = out.inference
    assert (inf.count, inf.avg_ms, inf.min_ms, inf.max_ms, inf.std_ms) == (
        10, pytest.approx(7430.20), pytest.approx(7416.40), pytest.approx(7448.86), pytest.approx(9.92))
    assert (out.init_memory_mb, out.overall_memory_mb) == (pytest.approx(6391.74), pytest.approx(6391.74))
    assert out.peak_memory_mb is None     # "Peak memory usage not available"


def test_count_line_variants():
    same = parse_count_line("INFO: count=20 curr=1500 (all same)")
    assert (same.count, same.avg_ms, same.min_ms, same.max_ms, same.median_ms, same.std_ms) == (20, 1.5, 1.5, 1.5, 1.5, 0.0)
    pct = parse_count_line("count=50 first=2100 curr=2000 min=1900 max=2500 avg=2010.5 std=80 p5=1950 median=2001 p95=2300")
    assert (pct.p5_ms, pct.median_ms, pct.p95_ms) == pytest.approx((1.95, 2.001, 2.3))
    assert parse_count_line("Running benchmark for at least 50 iterations") is None


def test_no_timings_is_an_error():
    with pytest.raises(ValueError, match="no inference timings"):
        parse_benchmark_output("INFO: STARTING!\nERROR: Failed to load model\n")


NEW_PROFILE = """INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t Convolution (NHWC, F32) IGEMM\t    0.120\t    0.110\t 55.000%\t 55.000%\t     0.000\t        1\t[blocks.1.0.conv_dw.1]:3
\tConvolution (NHWC, F32) DWConv\t    0.090\t    0.090\t 45.000%\t100.000%\t     0.000\t        1\t[blocks.1.0.conv_dw.0]:2

============================== Top by Computation Time ==============================
\t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t Convolution (NHWC, F32) IGEMM\t    0.120\t    0.110\t 55.000%\t 55.000%\t     0.000\t        1\t[blocks.1.0.conv_dw.1]:3
"""

OLD_PROFILE = """Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t                 CONV_2D\t            0.000\t    4.269\t    4.213\t 12.689%\t 12.689%\t     0.000\t        1\t[conv2d/Relu]:0
\t       DEPTHWISE_CONV_2D\t            4.215\t    1.031\t    1.020\t  3.072%\t 15.761%\t     0.000\t        1\t[dw/Relu6]:1
"""


def test_op_profile_columns_come_from_the_header():
    new = parse_op_profile(NEW_PROFILE.splitlines())
    assert [(r.node_type, r.avg_ms, r.first_ms, r.percent, r.times_called, r.name, r.start_ms) for r in new] == [
        ("Convolution (NHWC, F32) IGEMM", 0.110, 0.120, 55.0, 1, "[blocks.1.0.conv_dw.1]:3", None),
        ("Convolution (NHWC, F32) DWConv", 0.090, 0.090, 45.0, 1, "[blocks.1.0.conv_dw.0]:2", None)]
    old = parse_op_profile(OLD_PROFILE.splitlines())
    assert [(r.node_type, r.start_ms, r.avg_ms, r.cdf_percent, r.name) for r in old] == [
        ("CONV_2D", 0.0, 4.213, 12.689, "[conv2d/Relu]:0"), ("DEPTHWISE_CONV_2D", 4.215, 1.020, 15.761, "[dw/Relu6]:1")]
