"""AlexNet (Krizhevsky et al., 2012): five convolutions, three overlapping max-pools, two wide FCs.

Scaled to the input instead of upsampling to 224x224: the first convolution is 11x11 with
stride 4 only on large inputs (>= 128 px) and 5x5 with stride 1 on small ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import ModelConfig
from pipeline.models.layers import conv, dense, logits, scaled
from pipeline.typed import check

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class Options(ModelConfig):
    #: Units of each of the two FC layers, before `width` scales them.
    fc_units: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            1 <= self.fc_units <= 65_536, "model_options.alexnet.fc_units", "must be in [1, 65536]"
        )


def build(x: keras.KerasTensor, num_classes: int, options: Options) -> keras.KerasTensor:
    """Channels 96-256-384-384-256 (times width) and two FC layers of `fc_units` with dropout."""
    from keras import layers

    width, dropout, fc_units = options.width, options.dropout, options.fc_units
    big = min(x.shape[1], x.shape[2]) >= 128
    kw = {"activation": options.activation, "batch_norm": options.batch_norm}
    x = conv(x, scaled(96, width), 11 if big else 5, strides=4 if big else 1, **kw, name="conv1")
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)  # (H-3)/2+1
    x = conv(x, scaled(256, width), 5, **kw, name="conv2")
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = conv(x, scaled(384, width), 3, **kw, name="conv3")
    x = conv(x, scaled(384, width), 3, **kw, name="conv4")
    x = conv(x, scaled(256, width), 3, **kw, name="conv5")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = dense(x, scaled(fc_units, width), dropout=dropout, **kw, name="fc1")
    x = dense(x, scaled(fc_units, width), dropout=dropout, **kw, name="fc2")
    return logits(x, num_classes)
