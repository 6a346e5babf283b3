"""The store-free training core: optimiser choice, the loop's history, each architecture
overfitting one batch, and the core running with MLflow not importable at all."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from pipeline import training
from pipeline.config import Config, TrainConfig, load_config
from pipeline.data import Splits
from pipeline.models import REGISTRY
from tests.helpers import garments, spec_for

#: Smaller than any zoo model, so that each fits a batch in seconds.
SMALL = {
    "lenet": {},
    "alexnet": {"width": 0.125, "fc_units": 512},
    "vgg": {"width": 0.5},
    "nin": {"width": 0.125},
    "googlenet": {"width": 0.125},
    "resnet": {"blocks": 1},
}


#: (learning rate, epochs) of the overfit test, measured here. NiN learns a batch slowly (class
#: maps averaged into logits): after 40 epochs at 3e-3 its loss was 0.72, at 1e-2 0.21.
#: GoogLeNet with batch norm at 1e-2 was below 0.2 after 8 epochs; without it, at 1.96 after 25.
OVERFIT = {"nin": (1e-2, 50), "googlenet": (1e-2, 15)}
OVERFIT_DEFAULT = (3e-3, 50)


def tiny_splits(count: int = 32) -> Splits:
    images = garments(count)
    labels = np.arange(count) % 10
    return Splits(spec_for((28, 28, 1)), images, labels, images, labels, images, labels)


def test_every_architecture_has_a_small_variant_here():
    assert set(SMALL) == set(REGISTRY)


def test_sgd_is_nesterov_with_momentum_and_decoupled_weight_decay():
    train = TrainConfig(optimizer="sgd", learning_rate=0.1, weight_decay=5e-3, momentum=0.8)
    opt = training.optimizer_for(train, steps_per_epoch=10)
    assert isinstance(opt, keras.optimizers.SGD)
    assert opt.nesterov and opt.momentum == 0.8 and opt.weight_decay == 5e-3


def test_adamw_applies_weight_decay_and_adam_is_refused_with_it():
    opt = training.optimizer_for(TrainConfig(optimizer="adamw", weight_decay=0.05), 10)
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == 0.05
    plain = training.optimizer_for(TrainConfig(optimizer="adam", weight_decay=0.0), 10)
    assert type(plain) is keras.optimizers.Adam and plain.weight_decay is None
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="is not applied by train.optimizer=adam"):
        load_config(None, ["train.optimizer=adam", "train.weight_decay=0.01"])


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    train = TrainConfig(learning_rate=0.01, epochs=10, warmup_epochs=2, schedule="cosine")
    schedule = training.schedule_for(train, steps_per_epoch=5)
    lr = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert lr[0] == 0.0
    assert lr[1] == pytest.approx(0.005)  # half way through the 10 warm-up steps
    assert lr[2] == pytest.approx(0.01)  # the peak, at the end of the warm-up
    assert lr[2] > lr[3] > lr[4] and lr[4] == pytest.approx(0.0, abs=1e-9)


def test_constant_schedule_is_a_number():
    assert training.schedule_for(TrainConfig(learning_rate=0.02, schedule="constant"), 5) == 0.02


def _recipe(name: str, epochs: int, **train) -> Config:
    """No augmentation, no dropout, no smoothing: nothing that keeps a batch from being
    learnt by heart."""
    config = load_config(
        None,
        [
            f"models=[{name}]",
            "augment.enabled=false",
            "model.dropout=0.0",
            "model.batch_norm=true",
            *(f"model_options.{name}.{k}={v}" for k, v in SMALL[name].items()),
        ],
    )
    return dataclasses.replace(
        config,
        train=dataclasses.replace(
            config.train,
            epochs=epochs,
            batch_size=32,
            optimizer="adam",
            learning_rate=3e-3,
            weight_decay=0.0,
            schedule="constant",
            early_stopping_patience=0,
            **train,
        ),
    )


def test_fit_returns_every_epoch_of_every_metric_and_keeps_the_best_weights(tmp_path):
    """Validation images with other labels get worse as the batch is learnt by heart, so the
    best epoch is not the last one: the model must end with the best epoch's weights."""
    train = tiny_splits()
    held_out = garments(32, seed=1)
    splits = dataclasses.replace(train, x_val=held_out, y_val=(np.arange(32) + 5) % 10)
    prepared = training.prepare("lenet", _recipe("lenet", 6), splits)
    fitted = training.fit(prepared, checkpoint_dir=tmp_path / "ckpt", verbose=0)
    keys = {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"}
    assert keys | {"epoch_seconds", "images_per_s"} <= set(fitted.history)
    assert all(len(values) == 6 for values in fitted.history.values())
    assert all(v > 0 for v in fitted.history["images_per_s"]) and fitted.wall_seconds > 0
    val_losses = fitted.history["val_loss"]
    assert int(np.argmin(val_losses)) < len(val_losses) - 1, val_losses  # best is not last
    evaluated = prepared.trainable.evaluate(prepared.val_ds, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(min(val_losses), rel=1e-4)
    assert evaluated["loss"] < val_losses[-1]


@pytest.mark.slow  # each architecture trains for a few seconds
@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_architecture_overfits_one_batch(name):
    """32 images, 10 classes, through the real loop: the training loss falls from about
    ln(10) = 2.3 to below 0.25, or the architecture cannot learn."""
    learning_rate, epochs = OVERFIT.get(name, OVERFIT_DEFAULT)
    recipe = _recipe(name, epochs)
    recipe = dataclasses.replace(
        recipe, train=dataclasses.replace(recipe.train, learning_rate=learning_rate)
    )
    prepared = training.prepare(name, recipe, tiny_splits())
    history = training.fit(prepared, verbose=0).history
    assert history["loss"][0] > 1.5
    assert min(history["loss"][-5:]) < 0.25, history["loss"]
    assert history["accuracy"][-1] >= 0.9


@pytest.mark.slow  # a Python process of its own, importing TensorFlow
def test_the_training_core_imports_and_fits_with_mlflow_not_installed():
    """A finder that refuses `mlflow` stands in for an environment without it."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoMlflow(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "mlflow" or name.startswith("mlflow."):
                    raise ModuleNotFoundError(f"No module named {name!r}")

        sys.meta_path.insert(0, NoMlflow())
        import dataclasses
        import numpy as np
        from pipeline import training
        from pipeline.config import load_config
        from pipeline.data import Splits
        from tests.helpers import garments, spec_for

        images = garments(16)
        labels = np.arange(16) % 10
        splits = Splits(spec_for((28, 28, 1)), images, labels, images, labels, images, labels)
        overrides = ["per_model.lenet.train.epochs=1", "train.warmup_epochs=0"]
        config = load_config("configs/zoo.yaml", overrides)
        prepared = training.prepare("lenet", config.for_run("lenet"), splits)
        fitted = training.fit(prepared, verbose=0)
        assert "mlflow" not in sys.modules
        print("epochs", len(fitted.history["loss"]))
        """
    )
    from pipeline import paths

    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=paths.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epochs 1" in proc.stdout
