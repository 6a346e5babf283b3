"""VGG (Simonyan & Zisserman, 2014): blocks of 3x3 'same' convolutions, each ending in a 2x2 pool.

Pools use 'same' padding so the five VGG-11 stages fit a 28x28 input (28-14-7-4-2-1).
"""

from __future__ import annotations

import keras
from keras import layers

from pipeline.errors import ConfigError
from pipeline.models.layers import conv, dense, logits, scaled

#: (convolutions, channels) per block, and the FC head's widths.
PRESETS: dict[str, tuple[tuple[tuple[int, int], ...], tuple[int, ...]]] = {
    "vgg11": (((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)), (4096, 4096)),
    "small": (((1, 32), (1, 64), (2, 128)), (256, 256)),
}


def vgg_block(
    x: keras.KerasTensor,
    convs: int,
    filters: int,
    *,
    activation: str,
    batch_norm: bool,
    name: str,
) -> keras.KerasTensor:
    """`convs` 3x3 convolutions with `filters` channels, then a 2x2 max-pool."""
    for i in range(convs):
        x = conv(
            x, filters, 3, activation=activation, batch_norm=batch_norm, name=f"{name}_conv{i + 1}"
        )
    return layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)  # ceil(H/2)


def build(
    x: keras.KerasTensor,
    num_classes: int,
    *,
    dropout: float = 0.5,
    width: float = 1.0,
    batch_norm: bool = False,
    activation: str = "relu",
    preset: str = "small",
    blocks: list | None = None,
    fc_units: list | None = None,
) -> keras.KerasTensor:
    """A preset (`small`, `vgg11`) or explicit `blocks` [[convs, channels], ...] and `fc_units`."""
    if preset not in PRESETS:
        raise ConfigError(f"config key 'model_options.vgg.preset' must be one of {list(PRESETS)}")
    preset_blocks, preset_fc = PRESETS[preset]
    for i, (convs, filters) in enumerate(blocks or preset_blocks):
        x = vgg_block(
            x,
            int(convs),
            scaled(int(filters), width),
            activation=activation,
            batch_norm=batch_norm,
            name=f"block{i + 1}",
        )
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units or preset_fc):
        x = dense(
            x,
            scaled(int(units), width),
            activation=activation,
            dropout=dropout,
            batch_norm=batch_norm,
            name=f"fc{i + 1}",
        )
    return logits(x, num_classes)
