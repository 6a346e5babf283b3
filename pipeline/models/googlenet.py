"""GoogLeNet (Szegedy et al., 2014): Inception blocks of four parallel paths, then GAP.

On small inputs (< 64 px) the stem is a stride-1 3x3 convolution without its max-pool, so a
28x28 image keeps enough resolution for the three pooling stages (28-14-7-4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, logits, scaled

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Options(ModelConfig):
    """GoogLeNet has no options of its own; its paper's dropout before the classifier is 0.4."""

    dropout: float = 0.4


#: Per block: 1x1, (1x1 reduce, 3x3), (1x1 reduce, 5x5), pool-projection channels.
STAGE3 = ((64, (96, 128), (16, 32), 32), (128, (128, 192), (32, 96), 64))
STAGE4 = (
    (192, (96, 208), (16, 48), 64),
    (160, (112, 224), (24, 64), 64),
    (128, (128, 256), (24, 64), 64),
    (112, (144, 288), (32, 64), 64),
    (256, (160, 320), (32, 128), 128),
)
STAGE5 = ((256, (160, 320), (32, 128), 128), (384, (192, 384), (48, 128), 128))


def inception(
    x: keras.KerasTensor,
    c1: int,
    c2: tuple[int, int],
    c3: tuple[int, int],
    c4: int,
    *,
    activation: str,
    batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """Four paths concatenated on channels: 1x1; 1x1->3x3; 1x1->5x5; 3x3 max-pool->1x1."""
    from keras import layers

    kw = {"activation": activation, "batch_norm": batch_norm}
    p1 = conv(x, c1, 1, **kw, name=f"{name}_1x1")
    p2 = conv(
        conv(x, c2[0], 1, **kw, name=f"{name}_3x3_reduce"), c2[1], 3, **kw, name=f"{name}_3x3"
    )
    p3 = conv(
        conv(x, c3[0], 1, **kw, name=f"{name}_5x5_reduce"), c3[1], 5, **kw, name=f"{name}_5x5"
    )
    p4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    p4 = conv(p4, c4, 1, **kw, name=f"{name}_pool_proj")
    return layers.Concatenate(name=f"{name}_concat")([p1, p2, p3, p4])  # B, H, W, c1+c2+c3+c4


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """The GoogLeNet stages b1-b5 of the paper, every channel count times `width`."""
    from keras import layers

    width, dropout = options.width, options.dropout
    kw = {"activation": options.activation, "batch_norm": options.batch_norm}
    small = min(x.shape[1], x.shape[2]) < 64
    if small:
        x = conv(x, scaled(64, width), 3, **kw, name="stem_conv")
    else:
        x = conv(x, scaled(64, width), 7, strides=2, **kw, name="stem_conv")
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    x = conv(x, scaled(64, width), 1, **kw, name="b2_conv1")
    x = conv(x, scaled(192, width), 3, **kw, name="b2_conv2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="b2_pool")(x)

    def stage(x: keras.KerasTensor, blocks, name: str) -> keras.KerasTensor:
        for i, (c1, c2, c3, c4) in enumerate(blocks):
            x = inception(
                x,
                scaled(c1, width),
                (scaled(c2[0], width), scaled(c2[1], width)),
                (scaled(c3[0], width), scaled(c3[1], width)),
                scaled(c4, width),
                **kw,
                name=f"{name}_{chr(ord('a') + i)}",
            )
        return x

    x = stage(x, STAGE3, "inception3")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="b3_pool")(x)
    x = stage(x, STAGE4, "inception4")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="b4_pool")(x)
    x = stage(x, STAGE5, "inception5")
    x = layers.GlobalAveragePooling2D(name="gap")(x)  # B, 1024*width
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    return logits(x, num_classes)
