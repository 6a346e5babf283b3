"""Inference-mode batch norm in one TensorFlow kernel, for the served model.

Keras 3's `BatchNormalization` at inference computes `(x - mean) * rsqrt(var + eps) * gamma +
beta` as separate elementwise ops over the whole activation, each a pass over memory, and
under `mixed_bfloat16` casts the activation to float32 and back around them. TensorFlow's
`FusedBatchNormV3` (`is_training=False`) does the same arithmetic in one kernel, in float32
inside, on the bf16 activation. On the 2-core CPU the VGG champion's call takes 0.72x the
time at 64 images and 0.64x at 256 (docs/BENCHMARKS.md, "The model call by thread pools").

`fuse(model)` swaps the inference method of the model's batch-norm layers, nested models
included, for the fused kernel, on those instances only: the layer's class, variables and
saved form do not change, and training-mode calls keep Keras' own code. The answers differ
from Keras' by float rounding (tests/test_batch_norm.py checks a model against Keras' method;
a probe on the champion found the same label for all 10,000 Fashion-MNIST test images).
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TensorFlow loads with the model, not with the service module
    import keras


def _fusable(layer: keras.layers.BatchNormalization) -> bool:
    """Whether the fused kernel can compute what Keras' inference method does for `layer`."""
    import keras

    return (
        keras.backend.backend() == "tensorflow"
        and not layer.renorm
        and layer.compute_dtype in ("float32", "bfloat16", "float16")
    )


def _fused_inference_call(self, inputs, training=None, mask=None):
    """`BatchNormalization.call` for one layer: the fused kernel at inference, else Keras'."""
    import keras
    import tensorflow as tf

    if training or mask is not None or self.axis not in (-1, len(inputs.shape) - 1):
        keras_call = keras.layers.BatchNormalization.call
        return keras_call(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, self.compute_dtype)  # B, H, W, C, or B, C after a Dense layer
    channels = x.shape[-1]
    flat = len(x.shape) != 4
    if flat:  # the kernel takes 4-D input: B', 1, 1, C
        x = tf.reshape(x, [-1, 1, 1, channels])
    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels]),
        offset=tf.cast(self.beta, "float32") if self.center else tf.zeros([channels]),
        mean=tf.cast(self.moving_mean, "float32"),
        variance=tf.cast(self.moving_variance, "float32"),
        epsilon=self.epsilon,
        data_format="NHWC",
        is_training=False,
    )
    return tf.reshape(y, tf.shape(inputs)) if flat else y


def fuse(model: keras.Model) -> int:
    """Give `model`'s batch-norm layers the fused inference kernel; returns how many took it.

    Call it before the model's first call: TensorFlow traces the predict function once.
    """
    import keras

    # Keras' own recursive walk (private, but tests/test_batch_norm.py fails if it changes):
    # `model.layers` holds a nested model, not its layers.
    layers = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and _fusable(layer)
    ]
    for layer in layers:
        layer.call = types.MethodType(_fused_inference_call, layer)
    return len(layers)
