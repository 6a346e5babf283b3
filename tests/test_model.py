"""The served network (serving/model.py): the views it answers with, its thread pools, and its
traced call, which answers exactly as Keras' predict_on_batch does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipeline.batch_norm import prepare_for_inference
from pipeline.models import build_model
from pipeline.tta import Views, base_model, flip_averaged, views_averaged, views_of
from serving.model import (
    ServedViews,
    ThreadPools,
    choose_thread_pools,
    choose_views,
    traced,
    with_views,
)
from tests.helpers import CARD, nested_batch_norm_model, spec_for


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("prepared", [True, False], ids=["batch norm folded", "keras batch norm"])
def test_the_traced_call_answers_as_predict_on_batch_for_any_batch_size(policy, prepared):
    model = nested_batch_norm_model(policy)
    if prepared:
        assert prepare_for_inference(model).folded == 2
    call = traced(model, (6, 6, 2))  # traced once, before any call
    rng = np.random.default_rng(1)
    for size in (1, 5, 64):
        pixels = rng.uniform(0, 255, (size, 6, 6, 2)).astype(np.float32)
        got = call(pixels)
        assert isinstance(got, np.ndarray) and got.shape == (size, 3)
        np.testing.assert_array_equal(got, np.asarray(model.predict_on_batch(pixels)))
    assert np.abs(got).max() > 1.0  # the weights matter


@pytest.mark.parametrize(
    ("cpus", "expected"), [(2, ThreadPools(1, 2)), (16, ThreadPools(8, 16)), (3, ThreadPools(1, 3))]
)
def test_a_multi_view_model_on_a_cpu_runs_its_passes_at_once(cpus, expected):
    assert choose_thread_pools(multi_view=True, gpu=False, cpus=cpus) == expected


@pytest.mark.parametrize(
    ("multi_view", "gpu", "cpus"),
    [(False, False, 2), (True, True, 2), (True, False, 1)],
    ids=["one view", "gpu", "one core"],
)
def test_otherwise_tensorflow_keeps_its_default_thread_pools(multi_view, gpu, cpus):
    assert choose_thread_pools(multi_view=multi_view, gpu=gpu, cpus=cpus) == ThreadPools(0, 0)


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
    assert choose_views(setting, card) == expected


def test_an_older_card_without_the_one_view_figure_serves_one_view_and_says_it_is_unknown():
    older = dataclasses.replace(FLIP, test_accuracy_one_view=None)
    assert choose_views("one", older) == ServedViews("one", 1, None)


def test_the_flip_from_a_model_that_never_averaged_it_is_refused_in_one_line():
    with pytest.raises(SystemExit) as stop:
        choose_views("flip", ONE)
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
    served = with_views(ten_view_model, choose_views(setting, TEN_VIEWS))
    assert views_of(served).count == count
    assert base_model(served) is base_model(ten_view_model)
    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28, 1)).astype(np.float32)
    network = base_model(ten_view_model)
    reference = {"model": ten_view_model, "flip": flip_averaged(network), "one": network}
    assert np.allclose(served(images), reference[setting](images), atol=1e-5)
