"""Test-time augmentation built into the model that is evaluated, logged and served.

`flip_averaged` wraps a trained model so that it answers with the mean of its logits for an
image and for that image's mirror image. Being one Keras graph (the flip is a `keras.ops`
node, which `.keras` files store and load with `safe_mode=True`), the test figures, the model
in MLflow, `mlflow models serve` and the BentoML service all compute the same thing, with no
code of this project needed to load it. It doubles the inference cost per image.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras is imported where a model is built, so importing this is free.
    import keras

#: The run metric a flip-averaged run adds: its network's test accuracy on the images alone.
ONE_VIEW_METRIC = "test_accuracy_one_view"
#: Suffix of the wrapper's name, so a loaded model says what it is.
FLIP_SUFFIX = "_flip_averaged"


def flip_averaged(model: keras.Model) -> keras.Model:
    """`model` answering with the mean of its logits for x and for x mirrored left-right."""
    import keras

    pixels = keras.Input(shape=model.input_shape[1:], name="pixels")
    mirrored = keras.ops.flip(pixels, axis=2)  # B, H, W, C: axis 2 is the width
    # float32 whatever the policy: the mean of two float32 logits, not a bf16 rounding of it.
    mean = keras.layers.Average(name="flip_average", dtype="float32")
    return keras.Model(
        pixels, mean([model(pixels), model(mirrored)]), name=model.name + FLIP_SUFFIX
    )


def base_model(model: keras.Model) -> keras.Model:
    """The trained network inside a `flip_averaged` model, or `model` itself."""
    import keras

    if not model.name.endswith(FLIP_SUFFIX):
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def is_flip_averaged(model: keras.Model) -> bool:
    return base_model(model) is not model
