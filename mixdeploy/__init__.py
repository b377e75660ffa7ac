"""mixdeploy: MixNet image classifiers from PyTorch to Android phones.

Pipeline (one module per stage, each a plain function returning a small dataclass):
models -> onnx.export -> onnx.rewrite -> tflite.convert -> parity -> bench.
"""

__version__ = "0.1.0"
