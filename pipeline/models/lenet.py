"""LeNet-5 (LeCun et al., 1998): two 5x5 convolutions with pooling, then FC 120 -> 84 -> classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, dense, logits, scaled

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Options(ModelConfig):
    #: Sigmoid activations and average pooling, as in the paper.
    classic: bool = False


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """ReLU and max pooling by default; `classic` restores sigmoid and average pooling."""
    from keras import layers

    width, batch_norm, dropout = options.width, options.batch_norm, options.dropout
    act = "sigmoid" if options.classic else options.activation
    pool = layers.AveragePooling2D if options.classic else layers.MaxPooling2D
    x = conv(x, scaled(6, width), 5, activation=act, batch_norm=batch_norm, name="conv1")
    x = pool(2, name="pool1")(x)  # H/2, W/2, 6
    x = conv(
        x,
        scaled(16, width),
        5,
        padding="valid",
        activation=act,
        batch_norm=batch_norm,
        name="conv2",
    )
    x = pool(2, name="pool2")(x)  # (H/2-4)/2, (W/2-4)/2, 16
    x = layers.Flatten(name="flatten")(x)
    x = dense(
        x, scaled(120, width), activation=act, dropout=dropout, batch_norm=batch_norm, name="fc1"
    )
    x = dense(
        x, scaled(84, width), activation=act, dropout=dropout, batch_norm=batch_norm, name="fc2"
    )
    return logits(x, num_classes)
