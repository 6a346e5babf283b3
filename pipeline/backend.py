"""Which Keras backend runs (`KERAS_BACKEND`: tensorflow, the CPU default, or jax), and what
each of TensorFlow's own speed-ups becomes under it.

The models, augmentation and losses are written in Keras layers and ops and run unchanged on
both. What differs is said here once, so that a run's params and the service's `/metadata`
name it instead of leaving it implied: under JAX, XLA compiles every step and fuses batch
norm itself, so TensorFlow's fused kernel and thread pools are left out, and `tf.data` gives
way to Keras' `PyDataset` (pipeline/training.py).
"""

from __future__ import annotations

import os

from pipeline.config import TrainConfig
from pipeline.errors import PipelineError

#: The backends this project runs on, in the order `KERAS_BACKEND` is documented.
BACKENDS = ("tensorflow", "jax")


def name() -> str:
    """The running Keras backend."""
    import keras

    return keras.backend.backend()


def is_tensorflow() -> bool:
    return name() == "tensorflow"


def check_environment(environ=os.environ) -> None:
    """Stops in one line if `KERAS_BACKEND` names a backend this project does not run on,
    before Keras is imported (which would fail on the missing package with a traceback)."""
    chosen = environ.get("KERAS_BACKEND", "").strip()
    if chosen and chosen not in BACKENDS:
        raise PipelineError(
            f"KERAS_BACKEND={chosen} is not a backend this project runs on: set it to one of "
            f"{', '.join(BACKENDS)}, or leave it unset for tensorflow"
        )


def training_choices(train: TrainConfig) -> dict[str, str]:
    """How this backend runs `train`'s speed-ups: each `on`, `off`, or what stands in for it.
    Logged as run params (pipeline/tracked_run.py)."""
    if is_tensorflow():
        return {
            "backend": "tensorflow",
            "backend.input_pipeline": "tf.data",
            "backend.jit_compile": "on" if train.jit_compile else "off",
            "backend.fused_batch_norm": "on" if train.fused_batch_norm else "off",
            "backend.op_determinism": "on" if train.deterministic else "off",
        }
    return {
        "backend": name(),
        "backend.input_pipeline": "keras.utils.PyDataset",
        # The JAX trainer has no eager path worth running: every step is an XLA program.
        "backend.jit_compile": "on (always under JAX)",
        "backend.fused_batch_norm": "left out (a TensorFlow kernel; XLA fuses batch norm)",
        "backend.op_determinism": (
            "XLA_FLAGS=--xla_gpu_deterministic_ops=true on a GPU; XLA on a CPU is deterministic"
            if train.deterministic
            else "off"
        ),
    }


def make_deterministic() -> None:
    """Repeatable ops run to run: TensorFlow's op determinism, or XLA's flag for GPU kernels
    (read when JAX starts its GPU backend, so call this before the first computation)."""
    if is_tensorflow():
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        return
    flag = "--xla_gpu_deterministic_ops=true"
    flags = os.environ.get("XLA_FLAGS", "")
    if flag not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {flag}".strip()
