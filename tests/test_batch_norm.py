"""Inference batch norm, folded or fused (pipeline/batch_norm.py), computes what Keras'
BatchNormalization does."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import batch_norm
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


def _keras_and(model_fn, **kwargs):
    """The model twice from one seed: as Keras computes it, and prepared for inference."""
    keras_model, served = model_fn(**kwargs), model_fn(**kwargs)
    return keras_model, served, batch_norm.prepare_for_inference(served)


@pytest.mark.parametrize(("policy", "tolerance"), [("float32", 1e-5), ("mixed_bfloat16", 3e-2)])
def test_folded_layers_answer_as_keras_does_and_leave_no_batch_norm_op(policy, tolerance):
    x = np.random.default_rng(2).normal(1.0, 2.0, (16, 6, 6, 2)).astype(np.float32)
    keras_model, folded_model, prepared = _keras_and(_model, policy=policy)
    assert prepared == batch_norm.Prepared(folded=2, fused=0)  # conv -> BN and dense -> BN
    expected = np.asarray(keras_model.predict_on_batch(x), np.float32)
    got = np.asarray(folded_model.predict_on_batch(x), np.float32)
    assert np.abs(expected).max() > 1.0  # the statistics matter
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    ops = _ops(folded_model)
    assert "FusedBatchNormV3" not in ops and "Rsqrt" not in ops
    assert ops.count("BiasAdd") == 2  # the folded shifts, which oneDNN fuses with the conv


def _branchy(policy: str = "float32", conv_bias: bool = True, conv_activation=None):
    """Conv(bias) -> BN -> ReLU, whose conv output a residual branch also reads, and a conv
    with its own bias (and optionally an activation) -> BN: one foldable batch norm at most."""
    import keras

    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 4))
    shared = keras.layers.Conv2D(4, 3, padding="same", dtype=policy)(inputs)
    x = keras.layers.BatchNormalization(dtype=policy)(shared)
    x = keras.layers.Add(dtype=policy)([keras.layers.Activation("relu", dtype=policy)(x), shared])
    x = keras.layers.Conv2D(3, 3, use_bias=conv_bias, activation=conv_activation, dtype=policy)(x)
    x = keras.layers.BatchNormalization(dtype=policy)(x)
    model = keras.Model(inputs, keras.layers.Flatten(dtype=policy)(x))
    rng = np.random.default_rng(5)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.BatchNormalization, keras.layers.Conv2D)):
            for weight in layer.weights:
                low = 0.2 if "variance" in weight.path or "gamma" in weight.path else -2.0
                weight.assign(rng.uniform(low, 2.0, weight.shape).astype(np.float32))
    return model


@pytest.mark.parametrize(
    ("conv_bias", "conv_activation", "expected"),
    [
        (True, None, batch_norm.Prepared(folded=1, fused=1)),  # the conv's own bias folds in
        (False, None, batch_norm.Prepared(folded=1, fused=1)),
        (True, "relu", batch_norm.Prepared(folded=0, fused=2)),  # an activation between
    ],
)
def test_only_a_batch_norm_whose_layer_feeds_nothing_else_is_folded(
    conv_bias, conv_activation, expected
):
    x = np.random.default_rng(6).normal(0.0, 2.0, (8, 6, 6, 4)).astype(np.float32)
    keras_model, served, prepared = _keras_and(
        _branchy, conv_bias=conv_bias, conv_activation=conv_activation
    )
    # The first conv's output also feeds the residual Add: folding it would change that branch.
    assert prepared == expected
    expected_answer = keras_model.predict_on_batch(x)
    assert np.abs(expected_answer).max() > 1.0
    np.testing.assert_allclose(served.predict_on_batch(x), expected_answer, rtol=1e-5, atol=1e-4)


def test_a_batch_norm_over_another_axis_is_not_folded():
    keras_model, served, prepared = _keras_and(_model, policy="float32", axis=1)
    # The conv's batch norm normalises rows, not channels: not a per-channel map of the conv.
    assert prepared == batch_norm.Prepared(folded=1, fused=1)
    x = np.random.default_rng(3).normal(0.0, 1.0, (8, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(
        served.predict_on_batch(x), keras_model.predict_on_batch(x), rtol=1e-5, atol=1e-5
    )


def test_a_folded_model_refuses_a_training_call():
    _, served, _ = _keras_and(_model, policy="float32")
    x = np.zeros((2, 6, 6, 2), np.float32)
    with pytest.raises(RuntimeError, match="folded into the layer before it"):
        served(x, training=True)
