"""Network in Network (Lin et al., 2013): NiN blocks and global average pooling instead of FCs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, scaled

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Options(ModelConfig):
    """NiN has no options of its own."""


def nin_block(
    x: keras.KerasTensor,
    filters: int,
    kernel: int,
    strides: int,
    *,
    activation: str,
    batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """A spatial convolution followed by two 1x1 convolutions (the per-pixel MLP)."""
    kw = {"activation": activation, "batch_norm": batch_norm}
    x = conv(x, filters, kernel, strides=strides, **kw, name=f"{name}_conv")
    x = conv(x, filters, 1, **kw, name=f"{name}_mlp1")
    return conv(x, filters, 1, **kw, name=f"{name}_mlp2")


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """Blocks of 96-256-384 channels with 3x3/2 pools, dropout, a class-wide block, then GAP."""
    from keras import layers

    width, dropout = options.width, options.dropout
    big = min(x.shape[1], x.shape[2]) >= 128
    kw = {"activation": options.activation, "batch_norm": options.batch_norm}
    x = nin_block(x, scaled(96, width), 11 if big else 5, 4 if big else 1, **kw, name="nin1")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1")(x)
    x = nin_block(x, scaled(256, width), 5, 1, **kw, name="nin2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool2")(x)
    x = nin_block(x, scaled(384, width), 3, 1, **kw, name="nin3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    # The last block has one channel per class; its 1x1 layers end without activation so the
    # averaged maps are logits.
    x = conv(x, num_classes, 3, **kw, name="nin4_conv")
    x = conv(x, num_classes, 1, **kw, name="nin4_mlp1")
    x = layers.Conv2D(num_classes, 1, name="nin4_mlp2")(x)
    return layers.GlobalAveragePooling2D(name="logits")(x)  # B, classes
