"""A tiny MixConv-like TFLite model for the bench tests (built with TensorFlow, a few seconds).

Ops are named like a MixNet (`blocks.1.0.conv_dw.N`) so the op-profile mapping has names to
work with; one branch is a 7x7 depthwise conv, the kernel size XNNPACK runs off its fast path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def build_tiny_tflite(path: Path, int8: bool = False, size: int = 16, classes: int = 10) -> Path:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def weight(*shape):
        return tf.constant(rng.standard_normal(shape).astype(np.float32) * 0.3)

    stem, dw3, dw7, fc = weight(3, 3, 3, 8), weight(3, 3, 4, 1), weight(7, 7, 4, 1), weight(8, classes)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.float32, name="input")])
    def net(x):
        x = tf.nn.relu(tf.nn.conv2d(x, stem, 1, "SAME", name="conv_stem"))
        a, b = tf.split(x, 2, axis=-1)
        a = tf.nn.depthwise_conv2d(a, dw3, [1, 1, 1, 1], "SAME", name="blocks.1.0.conv_dw.0")
        b = tf.nn.depthwise_conv2d(b, dw7, [1, 1, 1, 1], "SAME", name="blocks.1.0.conv_dw.1")
        x = tf.reduce_mean(tf.concat([a, b], axis=-1), axis=[1, 2])
        return tf.matmul(x, fc, name="classifier")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()])
    if int8:
        def representative():
            for _ in range(8):
                yield [rng.standard_normal((1, size, size, 3)).astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    path = Path(path)
    path.write_bytes(converter.convert())
    return path
