"""The served network, made ready once for the running Keras backend: its views chosen, batch
norm folded, and its forward pass compiled before the first request.

- **Views** (`SERVING_VIEWS`). A model averaged over views at test time (pipeline/tta.py)
  costs one pass of its network per view: 2 with the flip, 10 with the flip and shifts.
  `model` serves every view the registered model averages, `flip` the image and its mirror
  image, `one` the network alone; the model card carries the run's test accuracy for each, so
  `/metadata` says what is served and how accurate it measured.
- **Batch norm**: folded into the layer before it where it can be, else (TensorFlow only)
  the fused kernel (pipeline/batch_norm.py).
- **TensorFlow: thread pools.** A multi-view model is independent passes of one network.
  TensorFlow's defaults give every op all the cores and run the passes one op at a time; on a
  CPU with 2 or more cores, one half of the cores per op with the passes running at once
  answers faster (docs/BENCHMARKS.md, the model call). A one-view model, or a GPU, keeps the
  defaults. Left out under JAX, whose XLA runtime has its own.
- **TensorFlow: the call.** Keras' `predict_on_batch` wraps each batch for its data adapter
  and lets `tf.function` bind and check the arguments again; the concrete function of
  `model(x, training=False)`, traced once for a batch of any size, runs the same graph
  without that work and gives identical answers (tests/test_model.py).
- **JAX: fixed batch sizes.** XLA compiles one program per input shape, which at a new batch
  size would cost a request seconds. So the model's stateless call is compiled at start-up
  for the powers of two up to the largest batch (and that size), and each call is padded to
  the next of them; a request of a size never seen compiles nothing (tests/test_jax_backend.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np

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
    """Sizes of TensorFlow's two CPU thread pools; 0 is TensorFlow's default (one per core),
    and what is reported under JAX, which has no such pools."""

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
    """Sets the pools before TensorFlow starts its runtime; returns what TensorFlow reports
    (under another backend: no pools)."""
    if keras.backend.backend() != "tensorflow":
        return ThreadPools()
    import tensorflow as tf

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
    import tensorflow as tf

    spec = tf.TensorSpec([None, *input_shape], tf.float32, name="pixels")
    # autograph=False: the Keras graph has no Python control flow to convert.
    function = tf.function(lambda pixels: model(pixels, training=False), autograph=False)
    graph = function.get_concrete_function(spec)

    def call(pixels: np.ndarray) -> np.ndarray:
        return graph(tf.constant(pixels, tf.float32)).numpy()

    return call


def batch_sizes(largest: int) -> tuple[int, ...]:
    """The padded batch sizes under JAX: powers of two below `largest`, then `largest`."""
    sizes = [1 << i for i in range(largest.bit_length()) if 1 << i < largest]
    return (*sizes, largest)


class Compiled:
    """`model`'s inference pass compiled by XLA at start-up for each of `sizes`; a call is
    cut into pieces of at most the largest size, each padded to the next size up.

    `compiles` counts the programs traced, each of which XLA compiles: `len(sizes)` after
    start-up, and more only if a call met a shape that was not compiled.
    """

    def __init__(self, model: keras.Model, input_shape: Sequence[int], sizes: Sequence[int]):
        import jax

        self.sizes = tuple(sizes)
        self.compiles = 0
        self._state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
        )

        def run(trainable, non_trainable, pixels):
            self.compiles += 1  # Python runs here only while JAX traces a new shape
            logits, _ = model.stateless_call(trainable, non_trainable, pixels, training=False)
            return logits

        self._program = jax.jit(run)
        for size in self.sizes:
            self._run(np.zeros((size, *input_shape), np.float32)).block_until_ready()

    def _run(self, pixels: np.ndarray):
        return self._program(*self._state, pixels)

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, np.float32)  # the dtype compiled for: no retrace
        largest = self.sizes[-1]
        pieces = []
        for start in range(0, len(pixels), largest):
            piece = pixels[start : start + largest]
            count = len(piece)
            size = next(s for s in self.sizes if s >= count)
            if size > count:  # padded with blank images, whose answers are dropped
                blank = np.zeros((size - count, *piece.shape[1:]), piece.dtype)
                piece = np.concatenate([piece, blank])
            pieces.append(np.asarray(self._run(piece))[:count])
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


#: What the service runs without under JAX, for `/metadata` (the module doc says why).
LEFT_OUT_UNDER_JAX = (
    "TensorFlow's fused batch-norm kernel: XLA fuses batch norm",
    "TensorFlow's thread pools: XLA's runtime has its own",
)


@dataclass(frozen=True)
class ServedModel:
    """The ready model call and what was done to get it (for `/metadata`)."""

    forward: Forward
    views: ServedViews
    pools: ThreadPools
    batch_norm: Prepared
    backend: str
    #: The batch sizes compiled at start-up (JAX); empty where one graph takes any size.
    batch_sizes: tuple[int, ...] = ()
    #: The backend's speed-ups this server runs without, and why.
    left_out: tuple[str, ...] = ()

    def compiles_after_start(self) -> int:
        """Programs compiled since start-up (JAX): 0 unless a call met an unseen shape."""
        if isinstance(self.forward, Compiled):
            return self.forward.compiles - len(self.forward.sizes)
        return 0


def load(path: str, card: ModelCard, *, views: str, gpu: bool, max_batch_size: int) -> ServedModel:
    """The `.keras` file at `path`, ready to serve as the module doc says."""
    served = choose_views(views, card)
    pools = apply_thread_pools(
        choose_thread_pools(multi_view=served.count > 1, gpu=gpu, cpus=usable_cpus())
    )
    model = with_views(keras.saving.load_model(path, safe_mode=True, compile=False), served)
    batch_norm = prepare_for_inference(model)
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return ServedModel(traced(model, card.input_shape), served, pools, batch_norm, backend)
    forward = Compiled(model, card.input_shape, batch_sizes(max_batch_size))
    return ServedModel(
        forward, served, pools, batch_norm, backend, forward.sizes, LEFT_OUT_UNDER_JAX
    )
