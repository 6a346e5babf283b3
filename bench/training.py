"""Training throughput of one model: the project's tf.data loop vs plain `fit` on NumPy arrays,
and the zoo's loop with its augmentation and batch norm against the loops they replaced.

Run as `python -m bench.training MODEL` so each model is measured in a fresh process, whose
peak RSS is then the model's training memory. `--deterministic` measures only the loop as
`make train` runs it (augmentation on, TF op determinism on), in its own process because
determinism is process-wide. `--zoo` measures the zoo profile's loop (see `measure_zoo`).
Prints one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from pipeline import paths, training
from pipeline.config import AugmentConfig, Config, DataConfig, load_config
from pipeline.data import Splits, load_fashion_mnist, make_splits
from pipeline.describe import describe, totals
from pipeline.training import make_dataset

BATCH = 128
#: Batches per timed epoch, by model cost, so each measurement takes seconds, not minutes.
BATCHES = {"lenet": 120, "vgg": 30, "nin": 8, "alexnet": 8, "googlenet": 6}
#: The same for the zoo's narrower models, in batches of BATCH images (a model whose zoo
#: recipe trains in larger batches takes fewer, larger steps over the same images).
ZOO_BATCHES = {"lenet": 120, "vgg": 60, "alexnet": 60, "nin": 40, "googlenet": 30}
REPEATS = 3
#: Rounds of the zoo comparison, each timing one epoch of every variant.
ZOO_ROUNDS = 6
#: Validation images per epoch: `fit` validates every epoch, which the timing leaves out.
VAL_IMAGES = 256


def _config(augment: bool, jit: bool = False, precision: str = "float32") -> Config:
    """The real training configuration, varied only in what a column measures."""
    return Config(
        model_options={"vgg": {"preset": "small"}},
        augment=AugmentConfig(enabled=augment),
        train=dataclasses.replace(
            Config().train,
            jit_compile=jit,
            precision=precision,
            schedule="constant",
            early_stopping_patience=0,
            seed=0,
        ),
    )


def _slice(count: int) -> Splits:
    """`count` batches of BATCH training images, and a little validation data."""
    splits = make_splits(load_fashion_mnist(), DataConfig(train_limit=20000), seed=0)
    n = count * BATCH
    return dataclasses.replace(
        splits,
        x_train=splits.x_train[:n],
        y_train=splits.y_train[:n],
        x_val=splits.x_val[:VAL_IMAGES],
        y_val=splits.y_val[:VAL_IMAGES],
    )


def _epochs(config: Config, epochs: int) -> Config:
    """`config` for `epochs` epochs; a warm-up longer than that is cut (the loop's speed does
    not depend on the learning rate)."""
    warmup = min(config.train.warmup_epochs, epochs - 1)
    train = dataclasses.replace(config.train, epochs=epochs, warmup_epochs=warmup)
    return dataclasses.replace(config, train=train)


def _timed(prepared: training.Prepared) -> list[float]:
    """Training images/s of each epoch of the real loop (`training.fit`)."""
    return training.fit(prepared, verbose=0).history["images_per_s"]


def _images_per_s(prepared: training.Prepared) -> float:
    """Median images/s over the epochs after the first (which traces the step)."""
    return statistics.median(_timed(prepared)[1:])


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def measure(name: str, deterministic: bool = False) -> dict:
    if deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    splits = _slice(BATCHES[name])
    n, epochs = len(splits.y_train), 1 + REPEATS

    def project(augment: bool, jit: bool = False, precision: str = "float32") -> float:
        config = _epochs(_config(augment, jit, precision), epochs)
        return _images_per_s(training.prepare(name, config, splits))

    if deterministic:
        return {"model": name, "pipeline_augment_deterministic": project(True)}
    # Plain Keras `fit` on NumPy arrays, no tf.data and no callbacks: the loop's reference.
    bare = training.prepare(name, _config(False), splits).trainable
    timer = EpochTimer()
    bare.fit(splits.x_train.astype(np.float32), splits.y_train, batch_size=BATCH,
             epochs=epochs, callbacks=[timer], verbose=0)  # fmt: skip
    result = {
        "model": name,
        "images": n,
        "macs_per_image": totals(describe(bare))["macs_per_image"],
        "baseline_numpy_fit": n / statistics.median(timer.seconds[1:]),
        "pipeline_no_augment": project(False),
        "pipeline_no_augment_xla": project(False, jit=True),
        "pipeline_no_augment_bf16": project(False, precision="mixed_bfloat16"),
        "pipeline_augment": project(True),
    }
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def keras_layer_augmentation(config: AugmentConfig, seed: int = 0) -> keras.layers.Pipeline:
    """The augmentation the zoo replaced: one Keras preprocessing layer per transform, mapped
    over batches in `tf.data` (the project's loop until the zoo profile), with the same
    factors as `config`."""
    t = config.translate
    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomTranslation(t, t, fill_mode="constant", seed=seed + 1),
        keras.layers.RandomContrast(config.contrast, seed=seed + 4),
        keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 5),
        keras.layers.RandomErasing(factor=config.erasing, scale=(0.02, 0.25), seed=seed + 6),
    ]
    return keras.layers.Pipeline(layers, name="keras_layer_augmentation")


def measure_zoo(name: str) -> dict:
    """The zoo profile's model and loop (`training.prepare` and `training.fit`), four ways: no
    augmentation; the old per-layer Keras augmentation in tf.data; the batch augmentation in
    the training graph (what the zoo runs); and that with Keras' own batch norm instead of the
    fused kernel.

    After a warm-up epoch each, the four take turns for ZOO_ROUNDS rounds of one epoch, in
    reverse order every other round, so that a slow spell of the shared machine or a position
    in the round weighs on all four alike. Each ratio is the median over rounds of that
    round's ratio."""
    zoo = _epochs(load_config(paths.CONFIG_DIR / "zoo.yaml").for_run(name), 1)
    splits = _slice(ZOO_BATCHES[name])
    no_augment = dataclasses.replace(zoo, augment=AugmentConfig(enabled=False))
    keras_bn = dataclasses.replace(
        zoo, train=dataclasses.replace(zoo.train, fused_batch_norm=False)
    )
    import tensorflow as tf

    old = keras_layer_augmentation(zoo.augment)
    plain = make_dataset(
        splits.x_train, splits.y_train, zoo.train.batch_size, training=True, seed=0
    )
    old_ds = plain.map(
        lambda img, label: (old(img, training=True), label), num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)
    variants = {
        "zoo_no_augment": training.prepare(name, no_augment, splits),
        "zoo_tfdata_keras_layers": dataclasses.replace(
            training.prepare(name, no_augment, splits), train_ds=old_ds
        ),
        "zoo_in_graph": training.prepare(name, zoo, splits),
        "zoo_in_graph_keras_bn": training.prepare(name, keras_bn, splits),
    }
    for prepared in variants.values():
        _timed(prepared)  # traces the step
    rates: dict[str, list[float]] = {key: [] for key in variants}
    for round_ in range(ZOO_ROUNDS):
        order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for key in order:
            rates[key].extend(_timed(variants[key]))

    def paired(numerator: str, denominator: str) -> float:
        """Median over rounds of images/s of `numerator` over `denominator`."""
        pairs = zip(rates[numerator], rates[denominator], strict=True)
        return statistics.median(n / d for n, d in pairs)

    return {
        "model": name,
        "zoo_macs_per_image": totals(describe(variants["zoo_in_graph"].model))["macs_per_image"],
        "zoo_precision": variants["zoo_in_graph"].precision,
        "zoo_batch_size": zoo.train.batch_size,
        "zoo_rounds": ZOO_ROUNDS,
        **{key: statistics.median(r) for key, r in rates.items()},
        "old_augment_over_none": paired("zoo_tfdata_keras_layers", "zoo_no_augment"),
        "new_augment_over_none": paired("zoo_in_graph", "zoo_no_augment"),
        "new_over_old_augment": paired("zoo_in_graph", "zoo_tfdata_keras_layers"),
        "fused_over_keras_bn": paired("zoo_in_graph", "zoo_in_graph_keras_bn"),
    }


def measure_backend(name: str) -> dict:
    """The zoo profile's loop for `name` under the running Keras backend: training images/s
    (median of the epochs after the first) and the first epoch's seconds, which hold the
    compile (bench/backends.py runs it once per backend)."""
    zoo = _epochs(load_config(paths.CONFIG_DIR / "zoo.yaml").for_run(name), 1 + REPEATS)
    splits = _slice(ZOO_BATCHES[name])
    prepared = training.prepare(name, zoo, splits)
    fitted = training.fit(prepared, verbose=0)
    rates, seconds = fitted.history["images_per_s"], fitted.history["epoch_seconds"]
    # The same compiled model fed plain arrays through Keras' own adapter: what the input
    # path (tf.data, or PyDataset under JAX) costs or gains against it.
    timer = EpochTimer()
    prepared.trainable.fit(
        splits.x_train.astype(np.float32), splits.y_train, batch_size=zoo.train.batch_size,
        epochs=1 + REPEATS, callbacks=[timer], verbose=0,
    )  # fmt: skip
    return {
        "arrays_images_per_s": len(splits.y_train) / statistics.median(timer.seconds[1:]),
        "model": name,
        "backend": keras.backend.backend(),
        "precision": prepared.precision,
        "images_per_s": statistics.median(rates[1:]),
        "first_epoch_s": seconds[0],
        "later_epoch_s": statistics.median(seconds[1:]),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    model_name = sys.argv[1]
    if "--backend" in sys.argv:
        figures = measure_backend(model_name)
    elif "--zoo" in sys.argv:
        figures = measure_zoo(model_name)
    else:
        figures = measure(model_name, "--deterministic" in sys.argv)
    print("BENCH " + json.dumps(figures), flush=True)
