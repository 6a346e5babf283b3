"""The fused batch-norm training path computes what Keras' own BatchNormalization computes."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.batch_norm import fused_batch_norm


def _train_step(fused: bool, x, policy: str = "float32"):
    keras.utils.set_random_seed(0)
    layer = keras.layers.BatchNormalization(momentum=0.9, dtype=policy)
    layer.build(x.shape)
    layer.gamma.assign(np.linspace(0.5, 2.0, x.shape[-1]).astype(np.float32))
    layer.beta.assign(np.linspace(-1.0, 1.0, x.shape[-1]).astype(np.float32))
    with fused_batch_norm(fused), tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.cast(layer(x, training=True), tf.float32)
        loss = tf.reduce_sum(y * tf.sin(y))
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    inference = layer(x, training=False)
    return [t.numpy() for t in (y, *grads, layer.moving_mean, layer.moving_variance, inference)]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_outputs_gradients_and_moving_statistics_match_keras(policy):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, (16, 5, 5, 4)), tf.float32)
    keras_path, fused_path = _train_step(False, x, policy), _train_step(True, x, policy)
    tolerance = 1e-4 if policy == "float32" else 5e-2
    names = ["output", "dx", "dgamma", "dbeta", "moving mean", "moving variance", "inference"]
    for name, a, b in zip(names, keras_path, fused_path, strict=True):
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance, err_msg=name)


def test_keras_method_is_back_after_the_block_and_dense_inputs_use_it():
    keras_call = keras.layers.BatchNormalization.call
    with fused_batch_norm():
        assert keras.layers.BatchNormalization.call is not keras_call
        layer = keras.layers.BatchNormalization()
        out = layer(np.ones((4, 3), np.float32) * np.arange(4)[:, None], training=True)
        assert out.shape == (4, 3)  # 2-D input: Keras' own path
    assert keras.layers.BatchNormalization.call is keras_call
