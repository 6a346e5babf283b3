"""VGG (Simonyan & Zisserman, 2014): blocks of 3x3 'same' convolutions, each ending in a 2x2 pool.

Pools use 'same' padding so the five VGG-11 stages fit a 28x28 input (28-14-7-4-2-1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, dense, logits, scaled
from pipeline.typed import check

if TYPE_CHECKING:
    import keras

#: (convolutions, channels) per block, and the FC head's widths.
PRESETS: dict[str, tuple[tuple[tuple[int, int], ...], tuple[int, ...]]] = {
    "vgg11": (((1, 64), (1, 128), (2, 256), (2, 512), (2, 512)), (4096, 4096)),
    "small": (((1, 32), (1, 64), (2, 128)), (256, 256)),
}


@dataclass(frozen=True)
class Options(ModelConfig):
    #: A named layout of PRESETS; `blocks` and `fc_units` replace its parts.
    preset: str = "small"
    #: (convolutions, channels) per block, e.g. [[1, 64], [2, 128]].
    blocks: tuple[tuple[int, int], ...] | None = None
    #: Units of the fully connected layers, e.g. [512, 512].
    fc_units: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.preset in PRESETS, "model_options.vgg.preset", f"must be one of {list(PRESETS)}")
        if self.blocks is not None:
            check(
                len(self.blocks) >= 1 and all(c >= 1 and f >= 1 for c, f in self.blocks),
                "model_options.vgg.blocks",
                "must be a non-empty list of [convolutions, channels], each at least 1",
            )
        if self.fc_units is not None:
            check(all(u >= 1 for u in self.fc_units), "model_options.vgg.fc_units", "must be >= 1")

    def layout(self) -> tuple[tuple[tuple[int, int], ...], tuple[int, ...]]:
        """The blocks and FC widths this model is built with."""
        preset_blocks, preset_fc = PRESETS[self.preset]
        return self.blocks or preset_blocks, self.fc_units or preset_fc


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
    from keras import layers

    for i in range(convs):
        x = conv(
            x, filters, 3, activation=activation, batch_norm=batch_norm, name=f"{name}_conv{i + 1}"
        )
    return layers.MaxPooling2D(2, padding="same", name=f"{name}_pool")(x)  # ceil(H/2)


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """A preset (`small`, `vgg11`) or explicit `blocks` [[convs, channels], ...] and `fc_units`."""
    from keras import layers

    width, batch_norm, activation = options.width, options.batch_norm, options.activation
    blocks, fc_units = options.layout()
    for i, (convs, filters) in enumerate(blocks):
        x = vgg_block(
            x,
            int(convs),
            scaled(int(filters), width),
            activation=activation,
            batch_norm=batch_norm,
            name=f"block{i + 1}",
        )
    x = layers.Flatten(name="flatten")(x)
    for i, units in enumerate(fc_units):
        x = dense(
            x,
            scaled(int(units), width),
            activation=activation,
            dropout=options.dropout,
            batch_norm=batch_norm,
            name=f"fc{i + 1}",
        )
    return logits(x, num_classes)
