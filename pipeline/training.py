"""The training core: build, compile and fit one zoo model on arrays, with no tracking store.

`prepare` builds the model under its precision and placement (pipeline/distribution.py)
and compiles the augmented training graph; `fit` runs Keras' loop with a best-validation
checkpoint, early stopping and a resumable backup, and returns the per-epoch history.
Nothing here imports MLflow: the tracked run (pipeline/tracked_run.py), the benchmark
(bench/training.py) and the fast tests call the same two functions.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from pipeline import checkpoints
from pipeline.augment import build_augmenter, with_augmentation
from pipeline.batch_norm import fused_batch_norm
from pipeline.callbacks import EpochStats, ResumableEarlyStopping
from pipeline.config import Config, TrainConfig
from pipeline.data import Splits
from pipeline.distribution import Placement, even_split, placement_for
from pipeline.errors import ConfigError
from pipeline.models import build_model
from pipeline.precision import dtype_policy, resolve

#: Validation batches are this large (cut to split evenly across replicas).
VALIDATION_BATCH = 512


class ArrayBatches(keras.utils.PyDataset):
    """Batches of (float32 pixels in [0, 255], int labels) from arrays in memory, for any
    backend: what `fit` reads under JAX, where there is no tf.data.

    A training set is shuffled again before each epoch, by a generator seeded with (seed,
    epoch), so a run repeats exactly, and a run resumed at an epoch (`start_at`) sees the
    order that epoch would have had.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        training: bool,
        seed: int = 0,
        drop_remainder: bool = False,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.training, self.seed, self.drop_remainder = training, seed, drop_remainder
        self.epoch = 0
        self.order = self._order()

    def _order(self) -> np.ndarray:
        if not self.training:
            return np.arange(len(self.y))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.y))

    def __len__(self) -> int:
        whole, rest = divmod(len(self.y), self.batch_size)
        return whole + (1 if rest and not self.drop_remainder else 0)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.x[rows].astype(np.float32), self.y[rows]

    def on_epoch_end(self) -> None:
        self.start_at(self.epoch + 1)

    def start_at(self, epoch: int) -> None:
        """The next batches are those of `epoch` (counted from 0)."""
        self.epoch = epoch
        self.order = self._order()


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
):
    """Batches of (float32 pixels in [0, 255], int64 labels): a tf.data pipeline under
    TensorFlow, an `ArrayBatches` under any other backend.

    Evaluation batches are never shuffled, so they are identical on every pass. Scaling and
    normalisation happen inside the model, the same for training and serving.
    """
    if keras.backend.backend() != "tensorflow":
        return ArrayBatches(
            x, y, batch_size, training=training, seed=seed, drop_remainder=drop_remainder
        )
    import tensorflow as tf  # TensorFlow's faster input path

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.map(
        lambda img, label: (tf.cast(img, tf.float32), label), num_parallel_calls=tf.data.AUTOTUNE
    )
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def schedule_for(
    train: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate per step: constant, or a linear warm-up then cosine decay to zero."""
    if train.schedule != "cosine":
        return train.learning_rate
    warmup = train.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=train.learning_rate if not warmup else 0.0,
        decay_steps=max(1, train.epochs * steps_per_epoch - warmup),
        warmup_target=train.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def optimizer_for(train: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The configured optimiser with its schedule (`schedule_for`)."""
    lr = schedule_for(train, steps_per_epoch)
    if train.optimizer == "sgd":
        return keras.optimizers.SGD(
            lr, momentum=train.momentum, nesterov=True, weight_decay=train.weight_decay or None
        )
    if train.optimizer == "adam":  # the config refuses adam with weight decay
        return keras.optimizers.Adam(lr)
    return keras.optimizers.AdamW(lr, weight_decay=train.weight_decay)


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels with label smoothing (Szegedy et al.,
    2016). Keras' sparse loss has no smoothing, so the labels are one-hot encoded in the graph."""

    def __init__(self, label_smoothing: float, name: str = "smoothed_crossentropy") -> None:
        super().__init__(name=name)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        one_hot = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1])
        return keras.losses.categorical_crossentropy(
            one_hot, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )


def loss_for(label_smoothing: float) -> keras.losses.Loss:
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return SmoothedSparseCrossentropy(label_smoothing)


def compile_for_training(model: keras.Model, config: Config, steps_per_epoch: int) -> keras.Model:
    """The model `fit` trains: augmentation in front (in the same graph), compiled with the
    configured optimiser, schedule and loss. The bare `model` shares its weights."""
    trainable = with_augmentation(model, build_augmenter(config.augment, config.train.seed))
    trainable.compile(
        optimizer=optimizer_for(config.train, steps_per_epoch),
        loss=loss_for(config.train.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        # Under JAX, `False` would run every step op by op: XLA is the JAX trainer's path.
        jit_compile=config.train.jit_compile or keras.backend.backend() == "jax",
        steps_per_execution=config.train.steps_per_execution,
    )
    return trainable


@dataclass
class Prepared:
    """A model ready for `fit`: the bare model (evaluated, logged, served), the compiled
    training graph around it, and its input pipelines."""

    name: str
    config: Config
    model: keras.Model
    trainable: keras.Model
    #: The Keras dtype policy the model was built under.
    precision: str
    placement: Placement
    train_images: int
    steps_per_epoch: int
    #: tf.data datasets under TensorFlow, `ArrayBatches` under JAX (`make_dataset`).
    train_ds: object
    val_ds: object

    @property
    def replicas(self) -> int:
        return self.placement.replicas


def prepare(name: str, config: Config, splits: Splits) -> Prepared:
    """Build and compile architecture `name` with `config` (its own recipe: `for_run`)."""
    t = config.train
    keras.utils.set_random_seed(t.seed)
    precision = resolve(t.precision)
    placement = placement_for(t)
    replicas = placement.replicas
    if t.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={t.batch_size} must be a multiple of the {replicas} replicas of "
            f"train.distribution={t.distribution} (an uneven split fails; "
            "pipeline/distribution.py)"
        )
    # Across replicas a short last batch fails (pipeline/distribution.py); the shuffle drops
    # different images each epoch.
    drop_remainder = replicas > 1
    images = len(splits.y_train)
    steps = images // t.batch_size if drop_remainder else int(np.ceil(images / t.batch_size))
    with placement.scope():  # a no-op for train.distribution=none
        with dtype_policy(precision):
            model = build_model(name, splits.spec, config.for_model(name))
        trainable = compile_for_training(model, config, steps)
    train_ds = make_dataset(
        splits.x_train,
        splits.y_train,
        t.batch_size,
        training=True,
        seed=t.seed,
        cache=config.data.cache,
        drop_remainder=drop_remainder,
    )
    kept, val_batch = even_split(len(splits.y_val), VALIDATION_BATCH, replicas)
    val_ds = make_dataset(
        splits.x_val[:kept], splits.y_val[:kept], val_batch, training=False, cache=config.data.cache
    )
    return Prepared(
        name, config, model, trainable, precision, placement, images, steps, train_ds, val_ds
    )


@dataclass(frozen=True)
class Fitted:
    """What `fit` returns: one value per epoch run in this call for every logged metric
    (loss, accuracy, val_loss, val_accuracy, learning_rate, epoch_seconds, images_per_s)."""

    history: dict[str, list[float]]
    wall_seconds: float


def fit(
    prepared: Prepared,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    checkpoint_dir: Path | None = None,
    previous_val_losses: Sequence[float] = (),
    verbose: int | None = None,
) -> Fitted:
    """Train for the configured epochs; the model ends with the weights of its best
    validation loss.

    With `checkpoint_dir`, a killed process resumes from its last finished epoch when called
    again with the same folder; `previous_val_losses` are those epochs' validation losses, so
    that early stopping and the best checkpoint carry on from them. `callbacks` run before the
    checkpoints, so an epoch counts as done only after they have seen it.
    """
    if checkpoint_dir is None:
        with tempfile.TemporaryDirectory(prefix="fit-") as scratch:
            return fit(prepared, callbacks, Path(scratch), previous_val_losses, verbose)
    t = prepared.config.train
    if isinstance(prepared.train_ds, ArrayBatches):  # resumed: that epoch's order
        prepared.train_ds.start_at(len(previous_val_losses))
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    best_weights = checkpoint_dir / checkpoints.BEST_WEIGHTS
    previous = list(previous_val_losses)
    every: list[keras.callbacks.Callback] = [
        EpochStats(prepared.train_images),
        *callbacks,
        keras.callbacks.ModelCheckpoint(
            best_weights,
            monitor="val_loss",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=min(previous) if previous else None,
        ),
    ]
    if t.early_stopping_patience:
        every.append(
            ResumableEarlyStopping(previous, monitor="val_loss", patience=t.early_stopping_patience)
        )
    # Last, so that an epoch counts as done only after it was logged and checkpointed.
    every.append(
        keras.callbacks.BackupAndRestore(
            checkpoint_dir / checkpoints.BACKUP, double_checkpoint=True
        )
    )
    start = time.perf_counter()
    # The input pipeline already shuffles (seeded); fit's own shuffle does not apply.
    with prepared.placement.scope(), fused_batch_norm(t.fused_batch_norm):
        history = prepared.trainable.fit(
            prepared.train_ds,
            validation_data=prepared.val_ds,
            epochs=t.epochs,
            callbacks=every,
            shuffle=False,
            # A terminal gets Keras' bar; logs get the callers' line per epoch alone.
            verbose=(1 if sys.stdout.isatty() else 0) if verbose is None else verbose,
        )
    wall = time.perf_counter() - start
    if best_weights.exists():
        prepared.trainable.load_weights(best_weights)
    return Fitted({k: [float(v) for v in vs] for k, vs in history.history.items()}, wall)
