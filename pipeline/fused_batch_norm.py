"""Batch normalisation in one TensorFlow kernel while training, for Keras 3 on the CPU.

Keras 3's `BatchNormalization` computes the batch statistics with separate mean, variance and
normalisation ops (and as many in the backward pass). TensorFlow's `FusedBatchNormV3` does each
direction in one kernel. Measured once while sizing the zoo on a 2-core CPU, it trained the
width-0.25 GoogLeNet at 543 instead of 322 images/s and NiN at 1,212 instead of 752;
docs/BENCHMARKS.md has the benchmark's side-by-side figure (`fused BN / Keras BN`), which
varies a lot between models and runs on a shared machine.

`fused_batch_norm()` swaps the training-mode computation of every 4-D `BatchNormalization` for
the fused kernel while a model's train step is traced, and restores Keras' own method on exit.
The layer's class, variables and saved form do not change, so a trained model is a plain Keras
model: inference, evaluation and serving use Keras' own code. The moving statistics are updated
exactly as Keras does (biased batch variance, the layer's momentum);
tests/test_fused_batch_norm.py checks outputs, gradients and moving statistics against Keras'.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

_KERAS_CALL = keras.layers.BatchNormalization.call


def _fusable(layer: keras.layers.BatchNormalization, inputs, training, mask) -> bool:
    return (
        bool(training)
        and layer.trainable
        and mask is None
        and not layer.renorm
        and len(inputs.shape) == 4
        and layer.axis in (-1, 3)
        and keras.backend.backend() == "tensorflow"
    )


def _fused_call(self, inputs, training=None, mask=None):
    if not _fusable(self, inputs, training, mask):
        return _KERAS_CALL(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, "float32")  # B, H, W, C: statistics in float32, as Keras does
    channels = x.shape[-1]
    gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
    beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=gamma,
        offset=beta,
        mean=tf.constant([], "float32"),
        variance=tf.constant([], "float32"),
        epsilon=self.epsilon,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel returns the unbiased (n - 1) batch variance; Keras tracks the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
    variance = variance * (count - 1.0) / count
    momentum = self.momentum
    self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


@contextlib.contextmanager
def fused_batch_norm(enabled: bool = True) -> Iterator[None]:
    """Within the block, training-mode batch norm uses TensorFlow's fused kernel."""
    if not enabled:
        yield
        return
    keras.layers.BatchNormalization.call = _fused_call
    try:
        yield
    finally:
        keras.layers.BatchNormalization.call = _KERAS_CALL
