"""A sweep: one parent MLflow run, one nested run per model, each resumable after a kill.

`train(config)` is the pure entry point the CLI and the tests call. A restarted sweep with the
same configuration finds its unfinished parent run, skips finished models and resumes the
unfinished one from its last epoch checkpoint (Keras `BackupAndRestore`).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf

from pipeline import checkpoints, paths, plots, tracking
from pipeline.augment import build_augmenter, with_augmentation
from pipeline.callbacks import EpochLogger, ProgressLine, ResumableEarlyStopping, SweepPosition
from pipeline.config import Config, sweep_key
from pipeline.data import DataSpec, Splits, load_splits
from pipeline.describe import describe, render, totals
from pipeline.distribution import even_split, strategy_for
from pipeline.environment import TRACKED_PACKAGES, environment_tags
from pipeline.errors import ConfigError
from pipeline.evaluate import (
    most_confident_errors,
    predict_logits,
    report,
    softmax,
    write_report_files,
)
from pipeline.fused_batch_norm import fused_batch_norm
from pipeline.inputs import make_dataset
from pipeline.models import build_model
from pipeline.precision import dtype_policy, resolve
from pipeline.sweep_lock import sweep_lock


@dataclass(frozen=True)
class RunResult:
    """The summary of one trained model, as printed at the end of a sweep."""

    model: str
    run_id: str
    params: int
    epochs: int
    best_val_accuracy: float
    test_accuracy: float
    test_macro_f1: float
    wall_seconds: float
    images_per_s: float


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    experiment_id: str
    runs: tuple[RunResult, ...]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.runs])


#: Tag of a run whose checkpoint could not be resumed; its value says why.
ABANDONED_TAG = "abandoned"


def _unfinished(runs: list, key: str, value: str):
    """The newest run whose tag `key` equals `value`, that did not finish and that was not
    abandoned."""
    for run in runs:  # search order: newest first
        tags = run.data.tags
        if tags.get(key) == value and run.info.status != "FINISHED" and ABANDONED_TAG not in tags:
            return run
    return None


def _optimizer(config: Config, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    t = config.train
    lr: float | keras.optimizers.schedules.LearningRateSchedule = t.learning_rate
    if t.schedule == "cosine":
        warmup = t.warmup_epochs * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=t.learning_rate if not warmup else 0.0,
            decay_steps=max(1, t.epochs * steps_per_epoch - warmup),
            warmup_target=t.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(
            lr, momentum=t.momentum, nesterov=True, weight_decay=t.weight_decay or None
        )
    if t.optimizer == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.AdamW(lr, weight_decay=t.weight_decay)


def compile_for_training(model: keras.Model, config: Config, steps_per_epoch: int) -> keras.Model:
    """The model `fit` trains: augmentation in front (in the same graph), compiled with the
    configured optimiser, schedule and loss. The bare `model` shares its weights."""
    trainable = with_augmentation(model, build_augmenter(config.augment, config.train.seed))
    trainable.compile(
        optimizer=_optimizer(config, steps_per_epoch),
        loss=_loss(config.train.label_smoothing),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.train.jit_compile,
    )
    return trainable


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


def _loss(label_smoothing: float) -> keras.losses.Loss:
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return SmoothedSparseCrossentropy(label_smoothing)


def _checkpoint_dir(config: Config, run_id: str) -> Path:
    base = Path(config.tracking.checkpoint_dir) if config.tracking.checkpoint_dir else None
    return (base or paths.CHECKPOINT_DIR) / run_id


def _resumable(name: str, config: Config, run_id: str) -> str | None:
    """`run_id` if its checkpoint can be resumed; else that run is marked abandoned (FAILED,
    with the reason in its `abandoned` tag) and None says: train this model again."""
    found = checkpoints.problem(_checkpoint_dir(config, run_id))
    if found is None:
        return run_id
    print(
        f"[{name}] warning: cannot resume run {run_id}: {found}; training {name} again "
        "from the first epoch in a new run",
        file=sys.stderr,
    )
    client = tracking.client()
    client.set_tag(run_id, ABANDONED_TAG, found)
    client.set_terminated(run_id, "FAILED")
    shutil.rmtree(_checkpoint_dir(config, run_id), ignore_errors=True)
    return None


def _log_figure(fig, name: str) -> None:
    mlflow.log_figure(fig, name)
    plt.close(fig)


def _conv_stage_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    """The activation after each convolution stage (the input of each pooling layer)."""
    outputs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            inbound = layer.input
            if not isinstance(inbound, list):
                outputs.append(inbound)
    return outputs[:6]


def log_visuals(model: keras.Model, spec: DataSpec, x_test, y_test, probs) -> None:
    """Misclassified grid, first-layer filters and feature maps of one test image."""
    errors = most_confident_errors(probs, y_test, count=16)
    names = spec.class_names
    titles = [
        f"true {names[y_test[i]]}\npred {names[probs[i].argmax()]} {probs[i].max():.2f}"
        for i in errors
    ]
    _log_figure(plots.image_grid(x_test[errors], titles), "misclassified.png")

    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = keras.ops.convert_to_numpy(first_conv.kernel)  # kh, kw, C_in, C_out
    filters = np.moveaxis(kernel, -1, 0)[:32]  # C_out, kh, kw, C_in
    if filters.shape[-1] not in (1, 3):
        filters = filters[..., :1]
    _log_figure(
        plots.image_grid(filters, [f"filter {i}" for i in range(len(filters))]),
        "first_layer_filters.png",
    )

    stages = _conv_stage_outputs(model)
    if stages:
        probe = keras.Model(model.inputs, stages)
        maps = probe.predict(x_test[:1].astype(np.float32), verbose=0)
        maps = maps if isinstance(maps, list) else [maps]
        images, titles = [], []
        for s, fmap in enumerate(maps):
            for c in range(min(8, fmap.shape[-1])):
                images.append(fmap[0, :, :, c : c + 1])
                titles.append(f"stage {s + 1} ch {c}")
        _log_figure(plots.image_grid(images, titles), "feature_maps.png")


#: Where a run keeps its example images, which packaging ships to the service's demo page.
EXAMPLES_DIR = "examples"


def write_examples(spec: DataSpec, x_test: np.ndarray, y_test: np.ndarray, out: Path) -> None:
    """The first test image of each class (up to 12 classes) as a PNG named `NN.png` after its
    class index: real held-out images for the service's demo page to offer."""
    from PIL import Image

    for index in range(min(12, len(spec.class_names))):
        found = np.flatnonzero(y_test == index)
        if len(found):
            pixels = x_test[found[0]]
            image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            Image.fromarray(image.astype(np.uint8)).save(out / f"{index:02d}.png")


def log_examples(spec: DataSpec, x_test: np.ndarray, y_test: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_examples(spec, x_test, y_test, Path(tmp))
        mlflow.log_artifacts(tmp, EXAMPLES_DIR)


def _evaluate_and_log(model: keras.Model, splits: Splits, run_id: str) -> dict[str, float]:
    """Test-set evaluation: metrics, confusion matrix, per-class table and figures."""
    spec = splits.spec
    logits = predict_logits(model, splits.x_test)
    probs = softmax(logits)
    result = report(splits.y_test, probs.argmax(axis=1), spec.class_names)
    with tempfile.TemporaryDirectory() as tmp:
        write_report_files(result, spec.class_names, Path(tmp))
        mlflow.log_artifacts(tmp)
    mlflow.log_table(result.per_class, "per_class_report.json")
    history = {
        k: tracking.metric_history(run_id, k)
        for k in ("loss", "accuracy", "val_loss", "val_accuracy")
    }
    _log_figure(plots.training_curves(history), "training_curves.png")
    log_visuals(model, spec, splits.x_test, splits.y_test, probs)
    log_examples(spec, splits.x_test, splits.y_test)
    return result.metrics()


def _log_model(model: keras.Model, splits: Splits, config: Config) -> str:
    """Log the Keras model with its signature; returns its `models:/` URI.

    MLflow 3.17's Keras flavour writes `input_example` before it creates the model folder and
    fails, so the example input is logged beside it as the run artifact `input_example.json`.
    """
    example = splits.x_test[:2].astype(np.float32)
    signature = mlflow.models.infer_signature(example, softmax(predict_logits(model, example)))
    mlflow.log_dict({"inputs": example.tolist()}, "input_example.json")
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=[f"{p}=={version(p)}" for p in TRACKED_PACKAGES],
        metadata={
            "data_spec": splits.spec.to_dict(),
            "data_config": json.loads(json.dumps(config.flat(), default=str)),
        },
    )
    return info.model_uri


def train_model(
    name: str,
    config: Config,
    splits: Splits,
    parent_run_id: str,
    experiment_id: str,
    resume_run_id: str | None = None,
    position: SweepPosition | None = None,
) -> RunResult:
    """Train, evaluate and log one architecture as a nested run (resumed if `resume_run_id`)."""
    config = config.for_run(name)  # its own recipe, and what its run logs as params
    if resume_run_id is not None:
        resume_run_id = _resumable(name, config, resume_run_id)
    t = config.train
    keras.utils.set_random_seed(t.seed)
    spec = splits.spec
    precision = resolve(t.precision)
    strategy = strategy_for(t)
    replicas = strategy.num_replicas_in_sync
    if t.batch_size % replicas:
        raise ConfigError(
            f"train.batch_size={t.batch_size} must be a multiple of the {replicas} replicas of "
            "train.strategy=mirrored (an uneven split fails; pipeline/distribution.py)"
        )
    drop_remainder = replicas > 1
    steps_per_epoch = (
        (len(splits.y_train) // t.batch_size)
        if drop_remainder
        else (int(np.ceil(len(splits.y_train) / t.batch_size)))
    )
    with strategy.scope():  # a no-op for train.strategy=none
        with dtype_policy(precision):
            model = build_model(name, spec, **config.for_model(name))
        trainable = compile_for_training(model, config, steps_per_epoch)
    table = describe(model)
    train_ds = make_dataset(
        splits.x_train,
        splits.y_train,
        t.batch_size,
        training=True,
        seed=t.seed,
        cache=config.data.cache,
        # Under MirroredStrategy a short last batch failed in the replicas' convolutions
        # (Keras 3.15, TF 2.21); the shuffle drops different images each epoch.
        drop_remainder=drop_remainder,
    )
    kept, val_batch = even_split(len(splits.y_val), 512, strategy.num_replicas_in_sync)
    val_ds = make_dataset(
        splits.x_val[:kept], splits.y_val[:kept], val_batch, training=False, cache=config.data.cache
    )

    with mlflow.start_run(
        run_id=resume_run_id,
        run_name=None if resume_run_id else name,
        experiment_id=experiment_id,
        nested=True,
        parent_run_id=parent_run_id,
    ) as run:
        run_id = run.info.run_id
        previous_val_losses = tracking.metric_history(run_id, "val_loss")
        if resume_run_id is None:
            mlflow.set_tags({"model": name, "dataset": spec.name, **environment_tags()})
            mlflow.log_params(
                {
                    **config.flat(),
                    "model.name": name,
                    "train.precision_resolved": precision,
                    "train.replicas": strategy.num_replicas_in_sync,
                }
            )
            mlflow.log_params({f"describe.{k}": v for k, v in totals(table).items()})
            mlflow.log_params({f"data.size.{k}": v for k, v in splits.sizes().items()})
            mlflow.log_metrics({"model_params": totals(table)["params"]})
            mlflow.log_text(render(table), "describe.txt")
            mlflow.log_text(table.to_csv(index=False), "describe.csv")
        else:
            mlflow.set_tag("resumed_from_epoch", len(previous_val_losses))
            print(f"[{name}] resuming run {run_id} after epoch {len(previous_val_losses)}")

        ckpt = _checkpoint_dir(config, run_id)
        ckpt.mkdir(parents=True, exist_ok=True)
        best_weights = ckpt / checkpoints.BEST_WEIGHTS
        callbacks: list[keras.callbacks.Callback] = [
            EpochLogger(run_id, len(splits.y_train), set(range(len(previous_val_losses)))),
            ProgressLine(
                name,
                position or SweepPosition(1, 1, time.perf_counter()),
                t.epochs,
                first_epoch=len(previous_val_losses),
            ),
            keras.callbacks.ModelCheckpoint(
                best_weights,
                monitor="val_loss",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=min(previous_val_losses) if previous_val_losses else None,
            ),
        ]
        if t.early_stopping_patience:
            callbacks.append(
                ResumableEarlyStopping(
                    previous_val_losses, monitor="val_loss", patience=t.early_stopping_patience
                )
            )
        # Last, so that an epoch counts as done only after it was logged and checkpointed.
        callbacks.append(
            keras.callbacks.BackupAndRestore(ckpt / checkpoints.BACKUP, double_checkpoint=True)
        )

        start = time.perf_counter()
        # The tf.data pipeline already shuffles (seeded); fit's own shuffle does not apply.
        with fused_batch_norm():
            trainable.fit(
                train_ds,
                validation_data=val_ds,
                epochs=t.epochs,
                callbacks=callbacks,
                shuffle=False,
                # A terminal gets Keras' bar; logs get ProgressLine's line per epoch alone.
                verbose=1 if sys.stdout.isatty() else 0,
            )
        wall = time.perf_counter() - start
        if best_weights.exists():
            trainable.load_weights(best_weights)

        val_accuracy = tracking.metric_history(run_id, "val_accuracy")
        images_per_s = tracking.metric_history(run_id, "images_per_s")
        test_metrics = _evaluate_and_log(model, splits, run_id)
        best_epoch = int(np.argmin(tracking.metric_history(run_id, "val_loss")))
        summary = {
            **test_metrics,
            "best_val_accuracy": val_accuracy[best_epoch],
            "best_epoch": best_epoch,
            "epochs_trained": len(val_accuracy),
            "train_wall_seconds": wall,
            "median_images_per_s": float(np.median(images_per_s)),
        }
        mlflow.log_metrics(summary)
        mlflow.set_tag("model_uri", _log_model(model, splits, config))
        shutil.rmtree(ckpt, ignore_errors=True)

    return _result_from_run(tracking.client().get_run(run_id))


def _result_from_run(run) -> RunResult:
    m = run.data.metrics
    return RunResult(
        model=run.data.tags["model"],
        run_id=run.info.run_id,
        params=int(m["model_params"]),
        epochs=int(m["epochs_trained"]),
        best_val_accuracy=round(m["best_val_accuracy"], 4),
        test_accuracy=round(m["test_accuracy"], 4),
        test_macro_f1=round(m["test_macro_f1"], 4),
        wall_seconds=round(m["train_wall_seconds"], 1),
        images_per_s=round(m["median_images_per_s"], 1),
    )


def train(config: Config) -> SweepResult:
    """Train every model of the sweep, tracked in MLflow; resume an interrupted identical sweep.

    One process at a time per store and configuration (pipeline/sweep_lock.py).
    """
    key = sweep_key(config)
    locks = Path(config.tracking.checkpoint_dir or paths.CHECKPOINT_DIR) / "locks"
    with sweep_lock(locks, tracking.tracking_uri(config.tracking), key):
        return _train_locked(config, key)


def _train_locked(config: Config, key: str) -> SweepResult:
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    splits = load_splits(config.data, config.train.seed)
    experiment_id = tracking.setup(config.tracking)
    client = tracking.client()
    parents = client.search_runs(
        [experiment_id], filter_string=f"tags.sweep_key = '{key}'", order_by=["start_time DESC"]
    )
    parent = _unfinished(
        [r for r in parents if "mlflow.parentRunId" not in r.data.tags], "sweep_key", key
    )
    results: list[RunResult] = []
    with mlflow.start_run(
        run_id=parent.info.run_id if parent else None,
        experiment_id=experiment_id,
        run_name=None if parent else f"sweep-{'-'.join(config.models)}",
    ) as parent_run:
        parent_id = parent_run.info.run_id
        if parent is None:
            mlflow.set_tags({"sweep_key": key, "sweep": "true", "dataset": splits.spec.name})
            mlflow.log_params(config.flat())
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            order_by=["start_time DESC"],
        )
        started = time.perf_counter()
        for index, name in enumerate(config.models, start=1):
            position = SweepPosition(index, len(config.models), started)
            done = [
                c
                for c in children
                if c.data.tags.get("model") == name and c.info.status == "FINISHED"
            ]
            if done:
                print(f"[{name}] already finished in run {done[0].info.run_id}; skipping")
                results.append(_result_from_run(done[0]))
                continue
            unfinished = _unfinished(children, "model", name)
            results.append(
                train_model(
                    name,
                    config,
                    splits,
                    parent_id,
                    experiment_id,
                    resume_run_id=unfinished.info.run_id if unfinished else None,
                    position=position,
                )
            )
        sweep = SweepResult(parent_id, experiment_id, tuple(results))
        table = sweep.table()
        mlflow.log_text(table.to_csv(index=False), "comparison.csv")
        mlflow.log_text(table.to_html(index=False), "comparison.html")
    return sweep
