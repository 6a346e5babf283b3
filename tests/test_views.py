"""`SERVING_VIEWS`: a server answers with all the registered model's test-time views or fewer,
and says which, with the accuracy the model's run measured for them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.models import build_model
from pipeline.test_time import Views, base_model, flip_averaged, views_averaged, views_of
from serving import views
from serving.views import ServedViews
from tests.helpers import CARD, spec_for

#: A card of a model with the flip and shifts (10 views), as `package_run` writes it.
TEN_VIEWS = dataclasses.replace(
    CARD,
    architecture="googlenet",
    test_accuracy=0.9356,
    test_time_views=10,
    test_accuracy_one_view=0.9322,
    test_accuracy_flip_only=0.9339,
)
FLIP = dataclasses.replace(
    TEN_VIEWS, test_time_views=2, test_accuracy=0.9366, test_accuracy_flip_only=None
)
ONE = dataclasses.replace(
    TEN_VIEWS,
    test_time_flip=False,
    test_time_views=1,
    test_accuracy=0.9183,
    test_accuracy_one_view=None,
    test_accuracy_flip_only=None,
)


@pytest.mark.parametrize(
    ("setting", "card", "expected"),
    [
        ("model", TEN_VIEWS, ServedViews("model", 10, 0.9356)),
        ("flip", TEN_VIEWS, ServedViews("flip", 2, 0.9339)),
        ("one", TEN_VIEWS, ServedViews("one", 1, 0.9322)),
        ("model", FLIP, ServedViews("model", 2, 0.9366)),
        ("flip", FLIP, ServedViews("flip", 2, 0.9366)),
        ("one", FLIP, ServedViews("one", 1, 0.9322)),
        ("model", ONE, ServedViews("model", 1, 0.9183)),
        ("one", ONE, ServedViews("one", 1, 0.9183)),
    ],
)
def test_each_setting_serves_its_views_with_the_accuracy_measured_for_them(setting, card, expected):
    assert views.choose(setting, card) == expected


def test_an_older_card_without_the_one_view_figure_serves_one_view_and_says_it_is_unknown():
    older = dataclasses.replace(FLIP, test_accuracy_one_view=None)
    assert views.choose("one", older) == ServedViews("one", 1, None)


def test_the_flip_from_a_model_that_never_averaged_it_is_refused_in_one_line():
    with pytest.raises(SystemExit) as stop:
        views.choose("flip", ONE)
    message = str(stop.value)
    assert "SERVING_VIEWS=flip needs a model that averages" in message and "\n" not in message
    assert "use model or one" in message


@pytest.fixture(scope="module")
def ten_view_model():
    return views_averaged(
        build_model("lenet", spec_for((28, 28, 1)), width=0.5), Views(flip=True, shift=1)
    )


@pytest.mark.parametrize(("setting", "count"), [("model", 10), ("flip", 2), ("one", 1)])
def test_the_served_model_is_the_same_network_with_the_views_chosen(ten_view_model, setting, count):
    served = views.apply(ten_view_model, views.choose(setting, TEN_VIEWS))
    assert views_of(served).count == count
    assert base_model(served) is base_model(ten_view_model)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype(np.float32)
    network = base_model(ten_view_model)
    reference = {"model": ten_view_model, "flip": flip_averaged(network), "one": network}
    assert np.allclose(served(images), reference[setting](images), atol=1e-5)
