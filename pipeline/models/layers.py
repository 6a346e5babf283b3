"""Building blocks shared by the architectures: the normalising stem, conv and dense blocks."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def scaled(units: int, width: float) -> int:
    """Channel or unit count multiplied by the width factor, never below 4."""
    return max(4, round(units * width))


#: What `stem` does, in words, for the model card.
NORMALISATION = "pixels/255, then (x - mean) / std per channel, inside the model"


def stem(inputs: keras.KerasTensor, mean, std) -> keras.KerasTensor:
    """Scale uint8-range pixels to [0, 1] and normalise per channel, inside the model.

    Serving then feeds decoded pixels and cannot drift from training's preprocessing.
    """
    from keras import layers

    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalise")(x)


def conv(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    *,
    strides: int = 1,
    padding: str = "same",
    activation: str = "relu",
    batch_norm: bool = False,
    name: str | None = None,
) -> keras.KerasTensor:
    """Conv2D -> [BatchNorm] -> activation (the bias is dropped when batch norm follows)."""
    from keras import layers

    x = layers.Conv2D(
        filters, kernel, strides=strides, padding=padding, use_bias=not batch_norm, name=name
    )(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn" if name else None)(x)
    return layers.Activation(activation, name=f"{name}_act" if name else None)(x)


def dense(
    x: keras.KerasTensor,
    units: int,
    *,
    activation: str,
    dropout: float,
    batch_norm: bool = False,
    name: str | None = None,
) -> keras.KerasTensor:
    """Dense -> [BatchNorm] -> activation -> Dropout."""
    from keras import layers

    x = layers.Dense(units, use_bias=not batch_norm, name=name)(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn" if name else None)(x)
    x = layers.Activation(activation, name=f"{name}_act" if name else None)(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout" if name else None)(x)
    return x


def logits(x: keras.KerasTensor, num_classes: int) -> keras.KerasTensor:
    """The classifier output: raw logits (the loss applies the softmax).

    Always float32, also under a mixed policy: the loss and softmax need its range and precision.
    """
    from keras import layers

    return layers.Dense(num_classes, name="logits", dtype="float32")(x)
