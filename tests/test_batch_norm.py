"""The served model's fused inference batch norm computes what Keras' BatchNormalization does."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from serving import batch_norm
from tests.helpers import nested_batch_norm_model as _model


def _ops(model: keras.Model) -> list[str]:
    spec = tf.TensorSpec([None, 6, 6, 2], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return [op.type for op in graph.get_operations()]


@pytest.mark.parametrize(("policy", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 2e-2)])
def test_fused_layers_answer_as_keras_does(policy, tolerance):
    x = np.random.default_rng(2).normal(1.0, 2.0, (16, 6, 6, 2)).astype(np.float32)
    keras_model, fused_model = _model(policy), _model(policy)
    assert batch_norm.fuse(fused_model) == 2  # the nested network's two layers
    expected = np.asarray(keras_model.predict_on_batch(x), np.float32)
    got = np.asarray(fused_model.predict_on_batch(x), np.float32)
    assert np.abs(expected).max() > 1.0  # the statistics matter
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    assert "FusedBatchNormV3" in _ops(fused_model)
    assert "FusedBatchNormV3" not in _ops(keras_model)


def test_training_calls_and_other_axes_keep_keras_code():
    x = np.random.default_rng(3).normal(0.0, 1.0, (8, 6, 6, 2)).astype(np.float32)
    keras_model, fused_model = _model("float32", axis=1), _model("float32", axis=1)
    assert batch_norm.fuse(fused_model) == 2
    # The convolution's batch norm normalises axis 1 (rows), which the kernel cannot.
    np.testing.assert_allclose(
        fused_model.predict_on_batch(x), keras_model.predict_on_batch(x), rtol=1e-6, atol=1e-6
    )
    assert _ops(fused_model).count("FusedBatchNormV3") == 1  # the Dense one
    np.testing.assert_allclose(
        fused_model(x, training=True), keras_model(x, training=True), rtol=1e-6, atol=1e-6
    )
