"""Keras callbacks for tracking and for resuming a killed run without logging an epoch twice."""

from __future__ import annotations

import time

import keras
import mlflow
import numpy as np


class EpochLogger(keras.callbacks.Callback):
    """Logs each epoch's metrics, learning rate, time and images/s to an MLflow run.

    Steps already present in the run (logged before a kill) are not logged again, so a resumed
    run ends with exactly one value per epoch.
    """

    def __init__(self, run_id: str, train_images: int, logged_steps: set[int]) -> None:
        super().__init__()
        self.run_id = run_id
        self.train_images = train_images
        self.logged_steps = set(logged_steps)
        self._epoch_start = 0.0
        self._train_seconds = 0.0

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._epoch_start = time.perf_counter()
        self._train_seconds = 0.0

    def on_test_begin(self, logs=None) -> None:
        # Validation follows the training part of the epoch: time only the training part.
        if self._epoch_start and not self._train_seconds:
            self._train_seconds = time.perf_counter() - self._epoch_start

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if epoch in self.logged_steps:
            return
        elapsed = time.perf_counter() - self._epoch_start
        train_seconds = self._train_seconds or elapsed
        metrics = {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v)}
        metrics["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        metrics["epoch_seconds"] = elapsed
        metrics["images_per_s"] = self.train_images / train_seconds
        mlflow.tracking.MlflowClient().log_batch(
            self.run_id,
            metrics=[
                mlflow.entities.Metric(k, v, int(time.time() * 1000), epoch)
                for k, v in metrics.items()
            ],
        )
        self.logged_steps.add(epoch)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that starts from the validation losses of the epochs already run."""

    def __init__(self, previous_val_losses: list[float], **kwargs) -> None:
        super().__init__(**kwargs)
        self.previous = list(previous_val_losses)

    def on_train_begin(self, logs=None) -> None:
        super().on_train_begin(logs)
        if self.previous:
            best_index = int(np.argmin(self.previous))
            self.best = self.previous[best_index]
            self.best_epoch = best_index
            self.wait = len(self.previous) - 1 - best_index
