"""The served model's forward pass, traced once into one TensorFlow function for any batch size.

Keras' `predict_on_batch` does more than run the graph on every call: it wraps the batch for
its data adapter, maps the input and output structures, and lets `tf.function` bind and check
the arguments again. The graph itself is the same. Calling the concrete function of
`model(x, training=False)`, traced once for a batch of any size, skips that work and gives
bit-identical answers (tests/test_forward.py). `bench/model_call.py` times the two side by
side ("traced / predict_on_batch"); the saving matters most at one image, where that work
is a large share of the call.

`SERVING_MODEL_CALL=keras` keeps `predict_on_batch`, only to measure what tracing buys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # TensorFlow loads with the model, not with the service module
    import keras

#: A model call: a float32 batch (N, H, W, C) in, the model's outputs (N, classes) out.
Forward = Callable[[np.ndarray], np.ndarray]

CHOICES = ("traced", "keras")


def keras_call(model: keras.Model) -> Forward:
    """`predict_on_batch`, as Keras serves a batch."""

    def call(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(pixels))

    return call


def traced(model: keras.Model, input_shape: Sequence[int]) -> Forward:
    """The inference graph of `model` on (N, *input_shape) float32 input, traced now, once.

    Trace it after any change to the model's layers (serving/batch_norm.py), which the graph
    then holds.
    """
    import tensorflow as tf

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="pixels")
    # autograph=False: the Keras graph has no Python control flow to convert.
    function = tf.function(lambda pixels: model(pixels, training=False), autograph=False)
    graph = function.get_concrete_function(spec)

    def call(pixels: np.ndarray) -> np.ndarray:
        return graph(tf.constant(pixels, tf.float32)).numpy()

    return call


def choose(setting: str, model: keras.Model, input_shape: Sequence[int]) -> Forward:
    """The model call `SERVING_MODEL_CALL` names."""
    if setting == "keras":
        return keras_call(model)
    return traced(model, input_shape)
