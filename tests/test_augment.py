"""Batch augmentation in the training graph: what each transform does, on garment images."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.augment import BatchAugment, build_augmenter, with_augmentation
from pipeline.config import AugmentConfig
from pipeline.data import DataSpec
from pipeline.models import build_model
from tests.helpers import garments

OFF = {"flip": False, "translate": 0.0, "zoom": 0.0, "contrast": 0.0, "brightness": 0.0}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return garments(64).astype(np.float32)


def test_inference_passes_pixels_through_untouched(images):
    layer = build_augmenter(AugmentConfig(erasing=0.5), seed=0)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images)), images)


def test_flip_mirrors_some_images_and_keeps_the_rest(images):
    out = keras.ops.convert_to_numpy(
        BatchAugment(**{**OFF, "flip": True}, seed=1)(images, training=True)
    )
    mirrored = [np.array_equal(o, x[:, ::-1]) for o, x in zip(out, images, strict=True)]
    kept = [np.array_equal(o, x) for o, x in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 10 < sum(mirrored) < 54 and 10 < sum(kept) < 54


def test_translation_shifts_content_within_its_range(images):
    layer = BatchAugment(**{**OFF, "translate": 0.1}, seed=2)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.shape == images.shape and not np.allclose(out, images)
    # The ink's centre of mass moves by at most 10% of the side (2.8 px), plus interpolation.
    rows = np.arange(28, dtype=np.float32)[None, :, None, None]

    def centre(x):
        return (x * rows).sum(axis=(1, 2, 3)) / x.sum(axis=(1, 2, 3))

    assert np.abs(centre(out) - centre(images)).max() < 3.5
    assert np.abs(centre(out) - centre(images)).max() > 0.5


def test_brightness_and_contrast_stay_in_pixel_range(images):
    layer = BatchAugment(**{**OFF, "contrast": 0.5, "brightness": 0.5}, seed=3)
    out = keras.ops.convert_to_numpy(layer(images, training=True))
    assert out.min() >= 0.0 and out.max() <= 255.0 and not np.allclose(out, images)


def test_erasing_replaces_one_rectangle_per_chosen_image(images):
    layer = BatchAugment(**OFF, erasing=1.0, seed=4)
    out = keras.ops.convert_to_numpy(layer(images, training=True))[..., 0]
    for before, after in zip(images[..., 0], out, strict=True):
        changed = np.argwhere(before != after)
        assert len(changed), "every image is erased when the probability is 1"
        (top, left), (bottom, right) = changed.min(axis=0), changed.max(axis=0)
        area = (bottom - top + 1) * (right - left + 1)
        assert area <= 0.25 * 28 * 28 + 2 * 28 + 1  # at most 25% of the image, rounded up
        assert len(changed) >= 0.5 * area  # a filled rectangle, not scattered pixels


def test_same_seed_same_batches_other_seed_other_batches(images):
    config = AugmentConfig(erasing=0.3, zoom=0.1)
    first = build_augmenter(config, seed=5)(images, training=True)
    again = build_augmenter(config, seed=5)(images, training=True)
    other = build_augmenter(config, seed=6)(images, training=True)
    assert np.array_equal(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(again))
    assert not np.allclose(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(other))


def test_nothing_to_do_builds_no_layer():
    assert build_augmenter(AugmentConfig(enabled=False), seed=0) is None
    assert build_augmenter(AugmentConfig(**OFF), seed=0) is None


def test_wrapped_model_trains_the_bare_model_and_the_bare_model_has_no_augmentation(images):
    spec = DataSpec("t", (28, 28, 1), tuple("0123456789"), (0.3,), (0.3,))
    keras.utils.set_random_seed(0)
    model = build_model("lenet", spec, dropout=0.0)
    trainable = with_augmentation(model, build_augmenter(AugmentConfig(erasing=0.5), seed=0))
    assert not any(isinstance(layer, BatchAugment) for layer in model.layers)
    before = model.predict(images, verbose=0)
    np.testing.assert_allclose(trainable.predict(images, verbose=0), before, atol=1e-6)
    trainable.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainable.train_on_batch(images, np.arange(64) % 10)
    assert not np.allclose(model.predict(images, verbose=0), before)
