"""Test-time augmentation built into the model that is evaluated, logged and served.

`views_averaged` wraps a trained model so that it answers with the mean of its logits over
several views of each image: the image and its mirror image (`flip`), and each of those moved
`shift` pixels up, down, left and right (`shift`, zeros filling the gap, as training's
translation does). Being one Keras graph (flip, pad and crop are Keras ops and layers, which
`.keras` files store and load with `safe_mode=True`), the test figures, the model in MLflow,
`mlflow models serve` and the BentoML service all compute the same thing, with no code of
this project needed to load it. Each view costs one pass of the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # Keras is imported where a model is built, so importing this is free.
    import keras

#: The run metric an averaged run adds: its network's test accuracy on the images alone.
ONE_VIEW_METRIC = "test_accuracy_one_view"
#: ... and, for a run with shifts, its accuracy with the flip alone (2 views).
FLIP_ONLY_METRIC = "test_accuracy_flip_only"
#: Suffix of the flip-only wrapper's name (models logged before shifts existed have it).
FLIP_SUFFIX = "_flip_averaged"
#: The wrapper's name ends with what it averages, so a loaded model says what it is.
_SUFFIX = re.compile(r"_(?P<flip>flip)?(?:_?shift(?P<shift>\d+))?_averaged$")


@dataclass(frozen=True)
class Views:
    """Which views of an image a model averages; `Views()` is the image alone."""

    flip: bool = False
    shift: int = 0

    @property
    def count(self) -> int:
        """Passes of the network per image."""
        return (2 if self.flip else 1) * (5 if self.shift else 1)

    def suffix(self) -> str:
        """The wrapper's name suffix (`_SUFFIX` reads it back); one view has no wrapper."""
        if not self.shift:
            return FLIP_SUFFIX if self.flip else ""
        return f"_{'flip_' if self.flip else ''}shift{self.shift}_averaged"


def _shifted(pixels, shift: int, dy: int, dx: int):
    """`pixels` moved dy rows down and dx columns right (negative: up, left), zeros filling."""
    import keras

    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)))
    crop = ((max(-dy, 0), max(dy, 0)), (max(-dx, 0), max(dx, 0)))
    padded = keras.layers.ZeroPadding2D(tuple((a * shift, b * shift) for a, b in pad))(pixels)
    return keras.layers.Cropping2D(tuple((a * shift, b * shift) for a, b in crop))(padded)


def views_averaged(model: keras.Model, views: Views) -> keras.Model:
    """`model` answering with the mean of its logits over `views`; `model` itself for one."""
    import keras

    if views.count == 1:
        return model
    pixels = keras.Input(shape=model.input_shape[1:], name="pixels")
    images = [pixels]
    if views.flip:
        images.append(keras.ops.flip(pixels, axis=2))  # B, H, W, C: axis 2 is the width
    if views.shift:
        moves = ((1, 0), (-1, 0), (0, 1), (0, -1))
        images += [_shifted(x, views.shift, dy, dx) for x in list(images) for dy, dx in moves]
    # float32 whatever the policy: the mean of float32 logits, not a bf16 rounding of it.
    name = "flip_average" if not views.shift else "view_average"
    mean = keras.layers.Average(name=name, dtype="float32")
    return keras.Model(pixels, mean([model(x) for x in images]), name=model.name + views.suffix())


def flip_averaged(model: keras.Model) -> keras.Model:
    """`model` answering with the mean of its logits for x and for x mirrored left-right."""
    return views_averaged(model, Views(flip=True))


def views_of(model: keras.Model) -> Views:
    """The views `model` averages, read from the wrapper's name; `Views()` for a bare one."""
    import keras

    match = _SUFFIX.search(model.name)
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if match is None or len(inner) != 1:
        return Views()
    return Views(flip=bool(match["flip"]), shift=int(match["shift"] or 0))


def base_model(model: keras.Model) -> keras.Model:
    """The trained network inside a `views_averaged` model, or `model` itself."""
    import keras

    if views_of(model).count == 1:
        return model
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def is_flip_averaged(model: keras.Model) -> bool:
    return views_of(model).flip
