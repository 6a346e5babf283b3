"""Training throughput of one model: the project's tf.data loop vs plain `fit` on NumPy arrays.

Run as `python -m bench.training MODEL` so each model is measured in a fresh process, whose
peak RSS is then the model's training memory. `--deterministic` measures only the loop as
`make train` runs it (augmentation on, TF op determinism on), in its own process because
determinism is process-wide. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from pipeline.augment import build_augmenter
from pipeline.config import AugmentConfig, DataConfig
from pipeline.data import load_fashion_mnist, make_splits
from pipeline.describe import describe, totals
from pipeline.inputs import make_dataset
from pipeline.models import build_model
from pipeline.precision import dtype_policy

BATCH = 128
#: Batches per timed epoch, by model cost, so each measurement takes seconds, not minutes.
BATCHES = {"lenet": 120, "vgg": 30, "nin": 8, "alexnet": 8, "googlenet": 6}
REPEATS = 3


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _compiled(name: str, spec, jit: bool, precision: str = "float32") -> keras.Model:
    keras.utils.set_random_seed(0)
    with dtype_policy(precision):
        model = build_model(name, spec, **({"preset": "small"} if name == "vgg" else {}))
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit,
    )
    return model


def _images_per_s(fit, images: int) -> float:
    """Median images/s over REPEATS epochs after one untimed warm-up epoch (tracing)."""
    timer = EpochTimer()
    fit(timer)
    return images / statistics.median(timer.seconds[1:])


def measure(name: str, deterministic: bool = False) -> dict:
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    raw = load_fashion_mnist()
    splits = make_splits(raw, DataConfig(train_limit=20000), seed=0)
    n = BATCHES[name] * BATCH
    x, y = splits.x_train[:n], splits.y_train[:n]
    epochs = 1 + REPEATS

    def project(augment: bool, jit: bool, precision: str = "float32"):
        augmenter = build_augmenter(AugmentConfig(), seed=0) if augment else None
        ds = make_dataset(x, y, BATCH, training=True, augmenter=augmenter, seed=0)
        model = _compiled(name, splits.spec, jit, precision)
        return lambda cb: model.fit(ds, epochs=epochs, callbacks=[cb], verbose=0, shuffle=False)

    def baseline(cb):
        model = _compiled(name, splits.spec, False)
        xf = x.astype(np.float32)
        model.fit(xf, y, batch_size=BATCH, epochs=epochs, callbacks=[cb], verbose=0)

    if deterministic:
        return {
            "model": name,
            "pipeline_augment_deterministic": _images_per_s(project(True, False), n),
        }
    macs = totals(describe(_compiled(name, splits.spec, False)))["macs_per_image"]
    result = {
        "model": name,
        "images": n,
        "macs_per_image": macs,
        "baseline_numpy_fit": _images_per_s(baseline, n),
        "pipeline_no_augment": _images_per_s(project(False, False), n),
        "pipeline_no_augment_xla": _images_per_s(project(False, True), n),
        "pipeline_no_augment_bf16": _images_per_s(project(False, False, "mixed_bfloat16"), n),
        "pipeline_augment": _images_per_s(project(True, False), n),
    }
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


if __name__ == "__main__":
    print("BENCH " + json.dumps(measure(sys.argv[1], "--deterministic" in sys.argv)), flush=True)
