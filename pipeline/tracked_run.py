"""One model's tracked run: a nested MLflow run around the training core, resumable after a kill.

It logs the run's recipe as params, each epoch's metrics as they come, the evaluation folder
(pipeline/evaluation_artifacts.py) and the model with its signature. A run that was killed
resumes from its last epoch checkpoint; one whose checkpoint cannot be read is marked
abandoned and trained again.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np

from pipeline import checkpoints, paths, tracking, training
from pipeline.backend import training_choices
from pipeline.callbacks import ProgressLine, SweepPosition
from pipeline.config import Config
from pipeline.data import Splits
from pipeline.describe import describe, render, totals
from pipeline.environment import environment_tags, installed_versions
from pipeline.evaluate import predict_logits, report
from pipeline.evaluation_artifacts import write_evaluation, write_reference
from pipeline.scoring import softmax
from pipeline.tta import FLIP_ONLY_METRIC, ONE_VIEW_METRIC, Views, views_averaged

#: Tag of a run whose checkpoint could not be resumed; its value says why.
ABANDONED_TAG = "abandoned"


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


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's scalar logs (with the training core's learning rate, time and
    images/s) to an MLflow run.

    Steps already present in the run (logged before a kill) are not logged again, so a resumed
    run ends with exactly one value per epoch.
    """

    def __init__(self, run_id: str, logged_steps: set[int]) -> None:
        super().__init__()
        self.run_id = run_id
        self.logged_steps = set(logged_steps)

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch in self.logged_steps:
            return
        now = int(time.time() * 1000)
        metrics = [
            mlflow.entities.Metric(k, float(v), now, epoch)
            for k, v in (logs or {}).items()
            if np.isscalar(v)
        ]
        tracking.client().log_batch(self.run_id, metrics=metrics)
        self.logged_steps.add(epoch)


def checkpoint_dir(config: Config, run_id: str) -> Path:
    base = Path(config.tracking.checkpoint_dir) if config.tracking.checkpoint_dir else None
    return (base or paths.CHECKPOINT_DIR) / run_id


def _resumable(name: str, config: Config, run_id: str) -> str | None:
    """`run_id` if its checkpoint can be resumed; else that run is marked abandoned (FAILED,
    with the reason in its `abandoned` tag) and None says: train this model again."""
    found = checkpoints.problem(checkpoint_dir(config, run_id))
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
    shutil.rmtree(checkpoint_dir(config, run_id), ignore_errors=True)
    return None


def _log_model(model: keras.Model, splits: Splits, config: Config) -> str:
    """Log the Keras model with its signature; returns its `models:/` URI.

    The metadata holds the data spec and the whole configuration as data
    (`config_from_flat` rebuilds it). MLflow 3.17's Keras flavour writes `input_example`
    before it creates the model folder and fails, so the example input is logged beside it as
    the run artifact `input_example.json`.
    """
    example = splits.x_test[:2].astype(np.float32)
    signature = mlflow.models.infer_signature(example, softmax(predict_logits(model, example)))
    mlflow.log_dict({"inputs": example.tolist()}, "input_example.json")
    info = mlflow.keras.log_model(
        model,
        name="model",
        signature=signature,
        pip_requirements=[f"{p}=={v}" for p, v in installed_versions().items()],
        metadata={
            "data_spec": splits.spec.to_dict(),
            "data_config": json.loads(json.dumps(config.flat(), default=str)),
        },
    )
    return info.model_uri


def _whole_history(run_id: str, resumed_epochs: int, fitted: training.Fitted) -> dict:
    """Every epoch's metrics: those before a resume are only in the store, the rest in `fit`'s
    history."""
    if not resumed_epochs:
        return fitted.history
    return {
        key: tracking.metric_history(run_id, key)[:resumed_epochs] + values
        for key, values in fitted.history.items()
    }


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
    prepared = training.prepare(name, config, splits)
    table = describe(prepared.model)
    sizes = totals(table)

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
            mlflow.set_tags(
                {
                    "model": name,
                    "dataset": splits.spec.name,
                    "backend": keras.backend.backend(),
                    **environment_tags(),
                }
            )
            mlflow.log_params(
                {
                    **config.flat(),
                    "model.name": name,
                    "train.precision_resolved": prepared.precision,
                    "train.replicas": prepared.replicas,
                    **training_choices(config.train),
                }
            )
            mlflow.log_params({f"describe.{k}": v for k, v in sizes.items()})
            mlflow.log_params({f"data.size.{k}": v for k, v in splits.sizes().items()})
            mlflow.log_metrics({"model_params": sizes["params"]})
            mlflow.log_text(render(table), "describe.txt")
            mlflow.log_text(table.to_csv(index=False), "describe.csv")
        else:
            mlflow.set_tag("resumed_from_epoch", len(previous_val_losses))
            print(f"[{name}] resuming run {run_id} after epoch {len(previous_val_losses)}")

        resumed = len(previous_val_losses)
        ckpt = checkpoint_dir(config, run_id)
        fitted = training.fit(
            prepared,
            callbacks=[
                EpochLogger(run_id, set(range(resumed))),
                ProgressLine(
                    name,
                    position or SweepPosition(1, 1, time.perf_counter()),
                    config.train.epochs,
                    first_epoch=resumed,
                ),
            ],
            checkpoint_dir=ckpt,
            previous_val_losses=previous_val_losses,
        )
        history = _whole_history(run_id, resumed, fitted)
        # What is evaluated is what is logged and served: the test-time views included.
        views = config.augment.test_views
        model = views_averaged(prepared.model, views)
        with tempfile.TemporaryDirectory(prefix="evaluation-") as tmp:
            evaluation = write_evaluation(
                model, splits.spec, splits.x_test, splits.y_test, history, Path(tmp)
            )
            write_reference(model, splits.spec, splits.x_val, splits.y_val, Path(tmp))
            mlflow.log_artifacts(tmp)
        mlflow.log_table(evaluation.per_class, "per_class_report.json")
        best_epoch = int(np.argmin(history["val_loss"]))
        summary = {
            **evaluation.metrics(),
            "best_val_accuracy": history["val_accuracy"][best_epoch],
            "best_epoch": best_epoch,
            "epochs_trained": len(history["val_accuracy"]),
            "train_wall_seconds": fitted.wall_seconds,
            "median_images_per_s": float(np.median(history["images_per_s"])),
        }
        # What the views are worth, measured on the same images: the network's accuracy
        # alone and, when shifts are averaged too, with the flip alone.
        fewer = {ONE_VIEW_METRIC: Views()} if views.count > 1 else {}
        if views.shift and views.flip:
            fewer[FLIP_ONLY_METRIC] = Views(flip=True)
        for metric, subset in fewer.items():
            logits = predict_logits(views_averaged(prepared.model, subset), splits.x_test)
            summary[metric] = report(
                splits.y_test, logits.argmax(axis=1), splits.spec.class_names
            ).accuracy
        mlflow.log_metrics(summary)
        mlflow.set_tag("model_uri", _log_model(model, splits, config))
        shutil.rmtree(ckpt, ignore_errors=True)

    return RunResult(
        model=name,
        run_id=run_id,
        params=int(sizes["params"]),
        epochs=int(summary["epochs_trained"]),
        best_val_accuracy=round(summary["best_val_accuracy"], 4),
        test_accuracy=round(evaluation.accuracy, 4),
        test_macro_f1=round(evaluation.macro_f1, 4),
        wall_seconds=round(fitted.wall_seconds, 1),
        images_per_s=round(summary["median_images_per_s"], 1),
    )


def result_from_run(run) -> RunResult:
    """The summary of a finished run, read back from the store (a sweep skipping it)."""
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
