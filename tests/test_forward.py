"""The served model's traced forward pass answers exactly as Keras' predict_on_batch does."""

from __future__ import annotations

import numpy as np
import pytest

from serving import batch_norm, forward
from tests.helpers import nested_batch_norm_model


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("setting", batch_norm.CHOICES)
def test_the_traced_call_answers_as_predict_on_batch_for_any_batch_size(policy, setting):
    model = nested_batch_norm_model(policy)
    prepared = batch_norm.prepare(model, setting)
    assert prepared.folded + prepared.fused == (0 if setting == "keras" else 2)
    traced = forward.traced(model, (6, 6, 2))  # traced once, before any call
    rng = np.random.default_rng(1)
    for size in (1, 5, 64):
        pixels = rng.uniform(0, 255, (size, 6, 6, 2)).astype(np.float32)
        got = traced(pixels)
        assert isinstance(got, np.ndarray) and got.shape == (size, 3)
        np.testing.assert_array_equal(got, forward.keras_call(model)(pixels))
    assert np.abs(got).max() > 1.0  # the weights matter
