"""How many views of each image the server averages: all the registered model's, or fewer.

A model averaged over views at test time (pipeline/test_time.py) costs one pass of its network
per view: 2 with the flip, 10 with the flip and shifts. `SERVING_VIEWS` trades that accuracy
for speed without retraining or re-registering:

- `model` (the default): every view the registered model averages;
- `flip`: the image and its mirror image (a model with shifts drops them);
- `one`: the network alone, one pass per image.

The model card carries the run's test accuracy for each (pipeline/model_card.py), so
`/metadata` says what is served and how accurate it measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.model_card import ModelCard
from pipeline.test_time import Views, base_model, views_averaged, views_of

if TYPE_CHECKING:
    import keras

CHOICES = ("model", "flip", "one")


@dataclass(frozen=True)
class ServedViews:
    """What the server answers with: `count` passes of the network per image, and that
    answer's test accuracy in the model's run (None where the run did not measure it)."""

    setting: str
    count: int
    test_accuracy: float | None


def choose(setting: str, card: ModelCard) -> ServedViews:
    """The views `setting` serves of `card`'s model; SystemExit says what to write instead."""
    if setting == "model" or card.test_time_views == {"one": 1, "flip": 2}[setting]:
        return ServedViews(setting, card.test_time_views, card.test_accuracy)
    if setting == "one":
        return ServedViews(setting, 1, card.test_accuracy_one_view)
    if not card.test_time_flip:
        raise SystemExit(
            "SERVING_VIEWS=flip needs a model that averages each image with its mirror image "
            "(trained with augment.test_flip); this one does not: use model or one"
        )
    return ServedViews(setting, 2, card.test_accuracy_flip_only)


def apply(model: keras.Model, served: ServedViews) -> keras.Model:
    """`model` answering with `served`'s views: itself, or its network re-wrapped."""
    if views_of(model).count == served.count:
        return model
    return views_averaged(base_model(model), Views(flip=served.count == 2))
