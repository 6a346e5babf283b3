"""Test-time views: one Keras graph whose answers are the mean over an image, its mirror image
and (with shifts) each of those moved a few pixels, stored and loaded like any model, and
refused where it makes no sense."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import AugmentConfig
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.precision import dtype_policy, model_precision
from pipeline.tta import (
    Views,
    base_model,
    flip_averaged,
    is_flip_averaged,
    views_averaged,
    views_of,
)
from tests.helpers import spec_for

IMAGES = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def network():
    return build_model("lenet", spec_for((28, 28, 1)), width=0.5)


def test_the_answer_is_the_mean_of_the_image_and_its_mirror(network):
    averaged = flip_averaged(network)
    expected = (np.asarray(network(IMAGES)) + np.asarray(network(IMAGES[:, :, ::-1]))) / 2
    assert np.allclose(averaged(IMAGES), expected, atol=1e-5)
    assert np.allclose(averaged(IMAGES), averaged(IMAGES[:, :, ::-1]), atol=1e-5)
    # Not the identity: the network alone tells an image from its mirror.
    assert not np.allclose(network(IMAGES), network(IMAGES[:, :, ::-1]), atol=1e-3)


def test_it_knows_its_trained_network(network):
    averaged = flip_averaged(network)
    assert base_model(averaged) is network and is_flip_averaged(averaged)
    assert base_model(network) is network and not is_flip_averaged(network)
    assert averaged.count_params() == network.count_params()


def test_it_round_trips_through_a_keras_file_in_safe_mode(network, tmp_path):
    import keras

    averaged = flip_averaged(network)
    averaged.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert is_flip_averaged(loaded)
    assert np.allclose(loaded(IMAGES), averaged(IMAGES), atol=1e-6)


def test_under_bf16_it_averages_in_float32_and_reports_the_networks_precision(tmp_path):
    import keras

    with dtype_policy("mixed_bfloat16"):
        averaged = flip_averaged(build_model("lenet", spec_for((28, 28, 1)), width=0.5))
    averaged.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert model_precision(loaded) == "mixed_bfloat16"
    assert loaded(IMAGES).dtype == "float32"


@pytest.mark.parametrize("off", [{"flip": False}, {"enabled": False}])
def test_a_test_time_flip_without_training_flips_is_refused(off):
    with pytest.raises(ConfigError, match="augment.test_flip' needs augment.enabled and augment"):
        AugmentConfig(test_flip=True, **off)


def _moved(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """NumPy's reference: `images` moved dy rows down and dx columns right, zeros filling."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    h, w = images.shape[1:3]
    return padded[:, 2 - dy : 2 - dy + h, 2 - dx : 2 - dx + w]


def test_with_shifts_the_answer_is_the_mean_of_ten_views(network):
    averaged = views_averaged(network, Views(flip=True, shift=2))
    moves = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))
    views = [_moved(x, dy, dx) for x in (IMAGES, IMAGES[:, :, ::-1]) for dy, dx in moves]
    expected = np.mean([np.asarray(network(v)) for v in views], axis=0)
    assert np.allclose(averaged(IMAGES), expected, atol=1e-5)
    # Not the flip alone: the moved views change the answer.
    assert not np.allclose(averaged(IMAGES), flip_averaged(network)(IMAGES), atol=1e-4)
    assert views_of(averaged) == Views(flip=True, shift=2) and Views(True, 2).count == 10
    assert base_model(averaged) is network


def test_shifts_without_the_flip_are_five_views_and_not_flip_averaged(network):
    averaged = views_averaged(network, Views(shift=1))
    assert views_of(averaged) == Views(shift=1) and views_of(averaged).count == 5
    assert not is_flip_averaged(averaged) and base_model(averaged) is network
    assert views_averaged(network, Views()) is network and views_of(network) == Views()


def test_a_shifted_model_round_trips_through_a_keras_file_in_safe_mode(network, tmp_path):
    import keras

    averaged = views_averaged(network, Views(flip=True, shift=1))
    averaged.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert views_of(loaded) == Views(flip=True, shift=1) and is_flip_averaged(loaded)
    assert np.allclose(loaded(IMAGES), averaged(IMAGES), atol=1e-6)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"test_shift": 1, "translate": 0.0}, "needs augment.enabled and augment.translate"),
        ({"test_shift": 1, "enabled": False}, "needs augment.enabled and augment.translate"),
        ({"test_shift": -1}, "from 0 .off. to 4"),
        ({"test_shift": 5}, "from 0 .off. to 4"),
    ],
)
def test_shifts_the_model_never_saw_are_refused(values, message):
    with pytest.raises(ConfigError, match=f"augment.test_shift' .*{message}"):
        AugmentConfig(**{"translate": 0.1, **values})
