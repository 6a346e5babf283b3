"""Training on several devices with each backend's own engine: `train.distribution`.

- `mirrored` (TensorFlow): `tf.distribute.MirroredStrategy`. Keras 3 on TensorFlow 2.21
  trains under it when the model is built and compiled in its scope; `fit` then splits each
  batch across the replicas and sums their gradients. On a GPU machine the replicas are the
  GPUs; without one, the CPU is split into `train.cpu_devices` logical devices, which runs
  the same code path (so it is tested on our CPU-only machines) but does not train faster.
- `data_parallel` (JAX): `keras.distribution.DataParallel` over every local device: the
  variables are replicated, each batch is sharded along its first axis, and XLA sums the
  gradients. On a CPU, `XLA_FLAGS=--xla_force_host_platform_device_count=N` makes N devices,
  which is how it is tested here.

Each is refused under the other backend with one line saying which to use. Multi-worker
training across machines is not offered (keras-team/keras#20585 for TensorFlow).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import keras

from pipeline.config import TrainConfig
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    """Where a model trains: how many replicas share each batch, and the scope in which the
    model is built, compiled and fitted."""

    replicas: int
    scope: Callable[[], AbstractContextManager]


ONE_DEVICE = Placement(1, contextlib.nullcontext)


def placement_for(train: TrainConfig) -> Placement:
    """The placement `train.distribution` asks for under the running backend."""
    backend = keras.backend.backend()
    if train.distribution == "none":
        return ONE_DEVICE
    if train.distribution == "mirrored":
        if backend != "tensorflow":
            raise ConfigError(
                "train.distribution=mirrored is TensorFlow's MirroredStrategy; under "
                f"KERAS_BACKEND={backend} use train.distribution=data_parallel"
            )
        strategy = _mirrored(train.cpu_devices)
        return Placement(strategy.num_replicas_in_sync, strategy.scope)
    if backend != "jax":
        raise ConfigError(
            "train.distribution=data_parallel is keras.distribution.DataParallel, which runs "
            "on JAX: set KERAS_BACKEND=jax (make train BACKEND=jax), or use "
            "train.distribution=mirrored under TensorFlow"
        )
    devices = keras.distribution.list_devices()
    return Placement(len(devices), keras.distribution.DataParallel(devices=devices).scope)


@functools.cache
def _mirrored(cpu_devices: int):
    """One MirroredStrategy per process: the logical CPU devices can be made only once, before
    TensorFlow starts its runtime."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
        )
    except RuntimeError:
        raise ConfigError(
            "train.distribution=mirrored splits the CPU into logical devices, which TensorFlow "
            "allows only before it starts: run it in a new process (`pipeline train`)"
        ) from None
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def even_split(examples: int, batch_size: int, replicas: int) -> tuple[int, int]:
    """(examples kept, batch size) so that every batch splits evenly across the replicas.

    Measured with Keras 3.15 and TF 2.21 on 2 logical CPU devices: a batch that splits unevenly
    fails. A first batch of 103 (52 and 51) fails `evaluate` with `AddN ... must have the same
    size and shape`, and a last batch of one (one image and none) fails in the replicas'
    convolutions. JAX's sharding refuses a batch that does not divide by the devices too. So
    the batch size is cut to a multiple of `replicas`, and so is the number of examples, which
    drops at most `replicas - 1` of them (none of the 6,000 validation images of
    Fashion-MNIST with 2 or 4 replicas).
    """
    if replicas <= 1:
        return examples, batch_size
    kept = examples - examples % replicas
    size = min(batch_size, kept)
    return kept, max(replicas, size - size % replicas)
