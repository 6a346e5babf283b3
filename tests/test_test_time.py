"""The test-time flip: one Keras graph whose answers are the mean over an image and its
mirror image, stored and loaded like any model, and refused where it makes no sense."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import AugmentConfig
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.precision import dtype_policy, model_precision
from pipeline.test_time import base_model, flip_averaged, is_flip_averaged
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
