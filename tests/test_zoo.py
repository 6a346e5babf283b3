"""The zoo profile: every architecture keeps its paper's structure, is sized for a CPU, and
takes a training step through the real training compile (augmentation, loss, optimiser)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline import paths, training
from pipeline.batch_norm import fused_batch_norm
from pipeline.config import load_config
from pipeline.data import DataSpec, Splits
from pipeline.describe import describe, totals
from pipeline.models import build_model
from pipeline.precision import resolve
from pipeline.training import SmoothedSparseCrossentropy
from tests.helpers import garments

ZOO = load_config(paths.CONFIG_DIR / "zoo.yaml")
SPEC = DataSpec("fashion_mnist", (28, 28, 1), tuple("0123456789"), (0.286,), (0.353,))


def zoo_model(name: str) -> keras.Model:
    """`name` as the zoo builds it, with its own `per_model` values."""
    return build_model(name, SPEC, ZOO.for_run(name).for_model(name))


def _layers(model: keras.Model, kind: type) -> list:
    return [layer for layer in model.layers if isinstance(layer, kind)]


def test_zoo_trains_all_five_architectures_on_all_the_data():
    assert ZOO.models == ("lenet", "alexnet", "vgg", "nin", "googlenet")
    assert ZOO.data.train_limit is None and ZOO.data.test_limit is None
    assert ZOO.augment.flip and ZOO.augment.translate and ZOO.augment.erasing
    assert ZOO.train.label_smoothing > 0 and ZOO.train.schedule == "cosine"


@pytest.mark.parametrize("name", ZOO.models)
def test_each_zoo_model_is_sized_for_a_cpu(name):
    model = zoo_model(name)
    assert totals(describe(model))["macs_per_image"] < 25_000_000


def test_architectures_keep_their_papers_structure():
    alexnet = zoo_model("alexnet")
    assert len(_layers(alexnet, keras.layers.Conv2D)) == 5
    pools = _layers(alexnet, keras.layers.MaxPooling2D)
    assert all(p.pool_size == (3, 3) and p.strides == (2, 2) for p in pools)  # overlapping
    assert len(_layers(alexnet, keras.layers.Dense)) == 3  # two wide FCs and the classifier
    assert len(_layers(alexnet, keras.layers.Dropout)) == 2

    vgg = zoo_model("vgg")
    assert {c.kernel_size for c in _layers(vgg, keras.layers.Conv2D)} == {(3, 3)}

    nin = zoo_model("nin")
    assert not _layers(nin, keras.layers.Dense)
    assert isinstance(nin.layers[-1], keras.layers.GlobalAveragePooling2D)
    ones = [c for c in _layers(nin, keras.layers.Conv2D) if c.kernel_size == (1, 1)]
    assert len(ones) == 2 * 4  # two 1x1 convolutions (the mlpconv) after each spatial one

    googlenet = zoo_model("googlenet")
    concats = _layers(googlenet, keras.layers.Concatenate)
    assert len(concats) == 9 and all(len(c.input) == 4 for c in concats)
    assert _layers(googlenet, keras.layers.GlobalAveragePooling2D)


@pytest.mark.slow  # traces each zoo model's train step
@pytest.mark.parametrize("name", ZOO.models)
def test_each_zoo_model_takes_a_training_step(name):
    recipe = ZOO.for_run(name)  # the model's own augmentation and training values
    images = garments(32)
    labels = np.arange(32) % 10
    splits = Splits(SPEC, images, labels, images, labels, images, labels)
    prepared = training.prepare(name, recipe, splits)  # as `make train PROFILE=zoo` builds it
    assert prepared.precision == resolve(recipe.train.precision)
    model, trainable = prepared.model, prepared.trainable
    x, y = images.astype(np.float32), labels
    before = model.get_weights()
    with fused_batch_norm():  # two steps: the warm-up's first learning rate is 0
        for _ in range(2):
            logs = trainable.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


def test_label_smoothing_loss_matches_the_formula():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    labels = np.array([0, 2])
    smoothing = 0.1
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = np.full((2, 3), smoothing / 3) + (1 - smoothing) * np.eye(3)[labels]
    expected = -(targets * log_probs).sum(axis=1).mean()
    loss = SmoothedSparseCrossentropy(smoothing)(labels, logits)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)
