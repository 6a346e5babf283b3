"""Keras callbacks with no tracking store: epoch figures, progress, resumable early stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np


class EpochStats(keras.callbacks.Callback):
    """Adds each epoch's learning rate, time and training images/s to its logs, so that the
    history `fit` returns and every later callback (a tracking logger among them) see them."""

    def __init__(self, train_images: int) -> None:
        super().__init__()
        self.train_images = train_images
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
        if logs is None:
            return
        elapsed = time.perf_counter() - self._epoch_start
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        logs["epoch_seconds"] = elapsed
        logs["images_per_s"] = self.train_images / (self._train_seconds or elapsed)


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


@dataclass(frozen=True)
class SweepPosition:
    """Where a model stands in its sweep, for the progress line."""

    index: int  # 1-based
    count: int
    started: float  # time.perf_counter() when the sweep started


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class ProgressLine(keras.callbacks.Callback):
    """One line per epoch: which model of how many, the epoch, its metrics, the time spent on
    the model and on the sweep, and the model's ETA from its mean epoch so far (the models
    still to come differ too much in cost for a sweep ETA to mean anything)."""

    def __init__(self, name: str, position: SweepPosition, epochs: int, first_epoch: int) -> None:
        super().__init__()
        self.name = name
        self.position = position
        self.epochs = epochs
        self.first_epoch = first_epoch
        self._start = 0.0

    def on_train_begin(self, logs=None) -> None:
        self._start = time.perf_counter()

    def line(self, epoch: int, logs: dict) -> str:
        now = time.perf_counter()
        elapsed = now - self._start
        per_epoch = elapsed / max(1, epoch + 1 - self.first_epoch)
        metrics = " ".join(
            f"{key} {float(logs[key]):.4f}"
            for key in ("loss", "accuracy", "val_loss", "val_accuracy")
            if key in logs
        )
        left = self.epochs - epoch - 1
        eta = f"ETA {_duration(per_epoch * left)}" if left else "done"
        return (
            f"[{self.name}] model {self.position.index} of {self.position.count}, epoch "
            f"{epoch + 1}/{self.epochs}: {metrics} | {_duration(elapsed)} on this model, "
            f"{_duration(now - self.position.started)} in the sweep, {eta}"
        )

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        print(self.line(epoch, logs or {}), flush=True)
