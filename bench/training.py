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
import tensorflow as tf

from pipeline import paths
from pipeline.config import AugmentConfig, Config, DataConfig, load_config
from pipeline.data import load_fashion_mnist, make_splits
from pipeline.describe import describe, totals
from pipeline.fused_batch_norm import fused_batch_norm
from pipeline.inputs import make_dataset
from pipeline.models import build_model
from pipeline.precision import dtype_policy, resolve
from pipeline.train import compile_for_training

BATCH = 128
#: Batches per timed epoch, by model cost, so each measurement takes seconds, not minutes.
BATCHES = {"lenet": 120, "vgg": 30, "nin": 8, "alexnet": 8, "googlenet": 6}
#: The same for the zoo's narrower models, in batches of BATCH images (a model whose zoo
#: recipe trains in larger batches takes fewer, larger steps over the same images).
ZOO_BATCHES = {"lenet": 120, "vgg": 60, "alexnet": 60, "nin": 40, "googlenet": 30}
REPEATS = 3
#: Rounds of the zoo comparison, each timing one epoch of every variant.
ZOO_ROUNDS = 6


class EpochTimer(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def _config(augment: bool, jit: bool = False, precision: str = "float32") -> Config:
    """The real training configuration, varied only in what a column measures."""
    return Config(
        model_options={"vgg": {"preset": "small"}},
        augment=AugmentConfig(enabled=augment),
        train=dataclasses.replace(
            Config().train, jit_compile=jit, precision=precision, schedule="constant"
        ),
    )


def _compiled(name: str, spec, config: Config, steps: int) -> keras.Model:
    """The model as `pipeline train` compiles it (augmentation, loss, optimiser)."""
    keras.utils.set_random_seed(0)
    with dtype_policy(resolve(config.train.precision)):
        model = build_model(name, spec, **config.for_model(name))
    return compile_for_training(model, config, steps)


def _images_per_s(fit, images: int) -> float:
    """Median images/s over REPEATS epochs after one untimed warm-up epoch (tracing)."""
    timer = EpochTimer()
    fit(timer)
    return images / statistics.median(timer.seconds[1:])


def _slice(count: int):
    splits = make_splits(load_fashion_mnist(), DataConfig(train_limit=20000), seed=0)
    n = count * BATCH
    return splits, splits.x_train[:n], splits.y_train[:n]


def measure(name: str, deterministic: bool = False) -> dict:
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    splits, x, y = _slice(BATCHES[name])
    n, epochs = len(y), 1 + REPEATS

    def project(augment: bool, jit: bool, precision: str = "float32"):
        ds = make_dataset(x, y, BATCH, training=True, seed=0)
        model = _compiled(name, splits.spec, _config(augment, jit, precision), BATCHES[name])
        return lambda cb: model.fit(ds, epochs=epochs, callbacks=[cb], verbose=0, shuffle=False)

    def baseline(cb):
        model = _compiled(name, splits.spec, _config(False), BATCHES[name])
        model.fit(x.astype(np.float32), y, batch_size=BATCH, epochs=epochs, callbacks=[cb],
                  verbose=0)  # fmt: skip

    if deterministic:
        return {
            "model": name,
            "pipeline_augment_deterministic": _images_per_s(project(True, False), n),
        }
    model = build_model(name, splits.spec, **_config(False).for_model(name))
    result = {
        "model": name,
        "images": n,
        "macs_per_image": totals(describe(model))["macs_per_image"],
        "baseline_numpy_fit": _images_per_s(baseline, n),
        "pipeline_no_augment": _images_per_s(project(False, False), n),
        "pipeline_no_augment_xla": _images_per_s(project(False, True), n),
        "pipeline_no_augment_bf16": _images_per_s(project(False, False, "mixed_bfloat16"), n),
        "pipeline_augment": _images_per_s(project(True, False), n),
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
    """The zoo profile's model and loop, four ways: no augmentation; the old per-layer Keras
    augmentation in tf.data; the batch augmentation in the training graph (what the zoo runs);
    and that with Keras' own batch norm instead of the fused kernel.

    After a warm-up epoch each, the four take turns for ZOO_ROUNDS rounds, in reverse order
    every other round, so that a slow spell of the shared machine or a position in the round
    weighs on all four alike. Each ratio is the median over rounds of that round's ratio."""
    zoo = load_config(paths.CONFIG_DIR / "zoo.yaml").for_run(name)  # the model's own recipe
    splits, x, y = _slice(ZOO_BATCHES[name])
    plain = make_dataset(x, y, zoo.train.batch_size, training=True, seed=0)
    old = keras_layer_augmentation(zoo.augment)
    old_ds = plain.map(
        lambda img, label: (old(img, training=True), label), num_parallel_calls=tf.data.AUTOTUNE
    ).prefetch(tf.data.AUTOTUNE)
    no_augment = dataclasses.replace(zoo, augment=AugmentConfig(enabled=False))
    variants = {  # name: (config, dataset, fused batch norm)
        "zoo_no_augment": (no_augment, plain, True),
        "zoo_tfdata_keras_layers": (no_augment, old_ds, True),
        "zoo_in_graph": (zoo, plain, True),
        "zoo_in_graph_keras_bn": (zoo, plain, False),
    }
    models = {}
    for key, (config, ds, fused) in variants.items():
        models[key] = _compiled(name, splits.spec, config, ZOO_BATCHES[name])
        with fused_batch_norm(fused):
            models[key].fit(ds, epochs=1, verbose=0, shuffle=False)  # traces the step
    seconds: dict[str, list[float]] = {key: [] for key in variants}
    for round_ in range(ZOO_ROUNDS):
        order = list(variants) if round_ % 2 == 0 else list(variants)[::-1]
        for key in order:
            _, ds, fused = variants[key]
            start = time.perf_counter()
            with fused_batch_norm(fused):
                models[key].fit(ds, epochs=1, verbose=0, shuffle=False)
            seconds[key].append(time.perf_counter() - start)

    def paired(numerator: str, denominator: str) -> float:
        """Median over rounds of images/s of `numerator` over `denominator`."""
        pairs = zip(seconds[denominator], seconds[numerator], strict=True)
        return statistics.median(d / n for d, n in pairs)

    return {
        "model": name,
        "zoo_macs_per_image": totals(describe(build_model(name, splits.spec,
                                                          **zoo.for_model(name))))["macs_per_image"],
        "zoo_precision": resolve(zoo.train.precision),
        "zoo_batch_size": zoo.train.batch_size,
        "zoo_rounds": ZOO_ROUNDS,
        **{key: len(y) / statistics.median(s) for key, s in seconds.items()},
        "old_augment_over_none": paired("zoo_tfdata_keras_layers", "zoo_no_augment"),
        "new_augment_over_none": paired("zoo_in_graph", "zoo_no_augment"),
        "new_over_old_augment": paired("zoo_in_graph", "zoo_tfdata_keras_layers"),
        "fused_over_keras_bn": paired("zoo_in_graph", "zoo_in_graph_keras_bn"),
    }  # fmt: skip


if __name__ == "__main__":
    model_name = sys.argv[1]
    if "--zoo" in sys.argv:
        figures = measure_zoo(model_name)
    else:
        figures = measure(model_name, "--deterministic" in sys.argv)
    print("BENCH " + json.dumps(figures), flush=True)
