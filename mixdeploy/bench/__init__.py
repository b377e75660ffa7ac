"""Benchmarks: host (LiteRT interpreter) and Android phones (adb + benchmark_model).

targets.py run_bench: `mixdeploy bench` as one call (flag checks, host / phones / ARM64 twin)
host.py   bench_host: LiteRT (+ onnxruntime / PyTorch baselines), interleaved runs
adb.py    Adb: the real adb client via subprocess, faults as DeviceError
phone.py  bench_phone: push with hash cache, pinned run, parse, on-device parity, cleanup
device_script.py  the host side of android_bench/device/mixdeploy_bench.sh (what runs on the phone)
parse.py  parse_benchmark_output: classic (us) and LiteRT CompiledModel (ms) formats
inputs.py parity_images: the preprocessed inputs of on-device parity (phone or ARM64 twin)
report.py latency next to MACs and the 600M budget; latency-vs-MACs plot

Modules are imported on use: none of them pulls TensorFlow in at import time.
"""
