"""The served network, made ready once: its views chosen, batch norm folded, TensorFlow's thread
pools sized, and its forward pass traced into one graph for any batch size.

- **Views** (`SERVING_VIEWS`). A model averaged over views at test time (pipeline/tta.py)
  costs one pass of its network per view: 2 with the flip, 10 with the flip and shifts.
  `model` serves every view the registered model averages, `flip` the image and its mirror
  image, `one` the network alone; the model card carries the run's test accuracy for each, so
  `/metadata` says what is served and how accurate it measured.
- **Batch norm**: folded into the layer before it where it can be, else TensorFlow's fused
  kernel (pipeline/batch_norm.py).
- **Thread pools.** A multi-view model is independent passes of one network. TensorFlow's
  defaults give every op all the cores and run the passes one op at a time; on a CPU with 2 or
  more cores, one half of the cores per op with the passes running at once answers faster
  (docs/BENCHMARKS.md, the model call). A one-view model, or a GPU, keeps the defaults.
- **The call.** Keras' `predict_on_batch` wraps each batch for its data adapter and lets
  `tf.function` bind and check the arguments again; the concrete function of
  `model(x, training=False)`, traced once for a batch of any size, runs the same graph without
  that work and gives identical answers (tests/test_model.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from pipeline.batch_norm import Prepared, prepare_for_inference
from pipeline.model_card import ModelCard
from pipeline.tta import Views, base_model, views_averaged, views_of

#: A model call: a float32 batch (N, H, W, C) in, the model's outputs (N, classes) out.
Forward = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ServedViews:
    """What the server answers with: `count` passes of the network per image, and that
    answer's test accuracy in the model's run (None where the run did not measure it)."""

    setting: str
    count: int
    test_accuracy: float | None


def choose_views(setting: str, card: ModelCard) -> ServedViews:
    """The views `setting` serves of `card`'s model; SystemExit says what to write instead."""
    if setting == "model" or card.test_time_views == {"one": 1, "flip": 2}[setting]:
        return ServedViews(setting, card.test_time_views, card.test_accuracy)
    if setting == "one":
        return ServedViews(setting, 1, card.test_accuracy_one_view)
    if not card.test_time_flip:
        raise SystemExit(
            "SERVING_VIEWS=flip needs a model that averages each image with its mirror image "
            "(trained with augment.test_flip); this one does not: use model or one"
        )
    return ServedViews(setting, 2, card.test_accuracy_flip_only)


def with_views(model: keras.Model, served: ServedViews) -> keras.Model:
    """`model` answering with `served`'s views: itself, or its network re-wrapped."""
    if views_of(model).count == served.count:
        return model
    return views_averaged(base_model(model), Views(flip=served.count == 2))


@dataclass(frozen=True)
class ThreadPools:
    """Sizes of TensorFlow's two CPU thread pools; 0 is TensorFlow's default (one per core)."""

    intra_op: int = 0
    inter_op: int = 0


def usable_cpus() -> int:
    """Cores this process may run on (its affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_thread_pools(*, multi_view: bool, gpu: bool, cpus: int) -> ThreadPools:
    """The pools by the rule in the module doc."""
    if multi_view and not gpu and cpus >= 2:
        return ThreadPools(intra_op=cpus // 2, inter_op=cpus)
    return ThreadPools()


def apply_thread_pools(pools: ThreadPools) -> ThreadPools:
    """Sets the pools before TensorFlow starts its runtime; returns what TensorFlow reports."""
    if pools.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(pools.intra_op)
    if pools.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(pools.inter_op)
    return ThreadPools(
        intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
    )


def traced(model: keras.Model, input_shape: Sequence[int]) -> Forward:
    """The inference graph of `model` on (N, *input_shape) float32 input, traced now, once.

    Trace it after any change to the model's layers (batch norm folding), which the graph
    then holds.
    """
    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="pixels")
    # autograph=False: the Keras graph has no Python control flow to convert.
    function = tf.function(lambda pixels: model(pixels, training=False), autograph=False)
    graph = function.get_concrete_function(spec)

    def call(pixels: np.ndarray) -> np.ndarray:
        return graph(tf.constant(pixels, tf.float32)).numpy()

    return call


@dataclass(frozen=True)
class ServedModel:
    """The ready model call and what was done to get it (for `/metadata`)."""

    forward: Forward
    views: ServedViews
    pools: ThreadPools
    batch_norm: Prepared


def load(path: str, card: ModelCard, *, views: str, gpu: bool) -> ServedModel:
    """The `.keras` file at `path`, ready to serve as the module doc says."""
    served = choose_views(views, card)
    pools = apply_thread_pools(
        choose_thread_pools(multi_view=served.count > 1, gpu=gpu, cpus=usable_cpus())
    )
    model = with_views(keras.saving.load_model(path, safe_mode=True, compile=False), served)
    batch_norm = prepare_for_inference(model)
    return ServedModel(traced(model, card.input_shape), served, pools, batch_norm)
