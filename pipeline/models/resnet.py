"""ResNet (He et al., 2015): stacks of residual blocks, two 3x3 convolutions added to a shortcut.

The paper's network for small images (its section 4.2, CIFAR-10): a 3x3 stem, then three stages
of `blocks` basic blocks with 16, 32 and 64 channels (times `width`), then global average
pooling and the classifier: 6 * blocks + 2 layers (ResNet-20 for blocks=3). The first block of
the second and third stage halves the resolution with a stride of 2 and projects its shortcut
with a 1x1 convolution (the paper's option B), so a 28x28 input runs at 28, 14 and 7.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, logits, scaled
from pipeline.typed import check

if TYPE_CHECKING:
    import keras

#: Channels of the three stages before `width`.
STAGES = (16, 32, 64)


@dataclass(frozen=True)
class Options(ModelConfig):
    #: Basic blocks per stage: 3 is ResNet-20, 5 ResNet-32, 9 ResNet-56.
    blocks: int = 3
    #: Batch norm after every convolution, as in the paper.
    batch_norm: bool = True
    #: Dropout before the classifier; the paper has none.
    dropout: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(1 <= self.blocks <= 64, "model_options.resnet.blocks", "must be in [1, 64]")


def residual_block(
    x: keras.KerasTensor,
    filters: int,
    strides: int,
    *,
    activation: str,
    batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """conv3x3 -> BN -> act -> conv3x3 -> BN, plus the shortcut, then the activation."""
    from keras import layers

    shortcut = x
    if strides != 1 or x.shape[-1] != filters:  # B, H/s, W/s, filters: project to match
        shortcut = layers.Conv2D(
            filters, 1, strides=strides, use_bias=not batch_norm, name=f"{name}_project"
        )(x)
        if batch_norm:
            shortcut = layers.BatchNormalization(name=f"{name}_project_bn")(shortcut)
    y = conv(
        x,
        filters,
        3,
        strides=strides,
        activation=activation,
        batch_norm=batch_norm,
        name=f"{name}_conv1",
    )
    y = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"{name}_conv2")(y)
    if batch_norm:
        y = layers.BatchNormalization(name=f"{name}_conv2_bn")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation(activation, name=f"{name}_out")(y)


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """The stem, three stages of `blocks` residual blocks, GAP, [dropout], the classifier."""
    from keras import layers

    kw = {"activation": options.activation, "batch_norm": options.batch_norm}
    x = conv(x, scaled(STAGES[0], options.width), 3, **kw, name="stem_conv")  # B, H, W, 16w
    for stage, channels in enumerate(STAGES):
        for block in range(options.blocks):
            strides = 2 if stage > 0 and block == 0 else 1
            x = residual_block(
                x,
                scaled(channels, options.width),
                strides,
                **kw,
                name=f"stage{stage + 1}_block{block + 1}",
            )
    x = layers.GlobalAveragePooling2D(name="gap")(x)  # B, 64w
    if options.dropout:
        x = layers.Dropout(options.dropout, name="dropout")(x)
    return logits(x, num_classes)
