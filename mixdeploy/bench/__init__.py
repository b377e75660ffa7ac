"""Benchmarks: host (LiteRT interpreter) and Android phones (adb + benchmark_model).

host.py   bench_host: LiteRT (+ onnxruntime / PyTorch baselines), interleaved runs
adb.py    Adb: the real adb client via subprocess, faults as DeviceError
phone.py  bench_phone: push with hash cache, pinned run, parse, on-device parity, cleanup
parse.py  parse_benchmark_output: classic (us) and LiteRT CompiledModel (ms) formats
inputs.py parity_images: the preprocessed inputs of on-device parity (phone or ARM64 twin)
report.py latency next to MACs and the 600M budget; latency-vs-MACs plot

Modules are imported on use: none of them pulls TensorFlow in at import time.
"""
