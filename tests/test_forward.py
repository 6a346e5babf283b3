"""The served model's traced forward pass answers exactly as Keras' predict_on_batch does."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from serving import batch_norm, forward


def _model(policy: str) -> keras.Model:
    """Conv -> BN -> ReLU -> Dense, with moving statistics far from the initial ones, inside an
    outer model as the test-time views nest the network."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, dtype=policy)(inputs)
    x = keras.layers.BatchNormalization(dtype=policy)(x)
    x = keras.layers.Activation("relu", dtype=policy)(x)
    x = keras.layers.Flatten(dtype=policy)(x)
    x = keras.layers.Dense(3, dtype="float32")(x)
    network = keras.Model(inputs, x, name="network")
    bn = network.layers[2]
    bn.moving_mean.assign(np.linspace(-1.0, 1.0, 4).astype(np.float32))
    bn.moving_variance.assign(np.linspace(0.5, 3.0, 4).astype(np.float32))
    outer = keras.Input((6, 6, 1))
    return keras.Model(outer, network(outer) * 2.0, name="views")


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("fused", [False, True])
def test_the_traced_call_answers_as_predict_on_batch_for_any_batch_size(policy, fused):
    model = _model(policy)
    if fused:
        assert batch_norm.fuse(model) == 1
    traced = forward.traced(model, (6, 6, 1))  # traced once, before any call
    rng = np.random.default_rng(1)
    for size in (1, 5, 64):
        pixels = rng.uniform(0, 255, (size, 6, 6, 1)).astype(np.float32)
        got = traced(pixels)
        assert isinstance(got, np.ndarray) and got.shape == (size, 3)
        np.testing.assert_array_equal(got, forward.keras_call(model)(pixels))
    assert np.abs(got).max() > 1.0  # the weights matter


def test_the_setting_chooses_the_call_or_refuses_in_one_line(monkeypatch):
    from serving import settings

    monkeypatch.delenv("SERVING_MODEL_CALL", raising=False)
    assert settings.load().model_call == "traced"
    monkeypatch.setenv("SERVING_MODEL_CALL", "keras")
    assert settings.load().model_call == "keras"
    monkeypatch.setenv("SERVING_MODEL_CALL", "xla")
    with pytest.raises(SystemExit, match="SERVING_MODEL_CALL must be one of traced, keras"):
        settings.load()
