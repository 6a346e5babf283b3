"""Training on several devices: `train.strategy: mirrored` is tf.distribute.MirroredStrategy.

Keras 3 on TensorFlow 2.21 trains under MirroredStrategy when the model is built and compiled in
its scope; `fit` then splits each batch across the replicas and sums their gradients. On a GPU
machine the replicas are the GPUs. Without one, the CPU is split into `train.cpu_devices`
logical devices, which runs the same code path (so it is tested on our CPU-only machines) but
does not make training faster. Multi-worker training (MultiWorkerMirroredStrategy across
machines) is not offered: Keras 3 does not support it yet (keras-team/keras#20585).
"""

from __future__ import annotations

import functools

import tensorflow as tf

from pipeline.config import TrainConfig
from pipeline.errors import ConfigError


def strategy_for(train: TrainConfig) -> tf.distribute.Strategy:
    """The strategy the config asks for; the default (one-device) strategy for `none`."""
    if train.strategy == "none":
        return tf.distribute.get_strategy()
    return _mirrored(train.cpu_devices)


@functools.cache
def _mirrored(cpu_devices: int) -> tf.distribute.Strategy:
    """One MirroredStrategy per process: the logical CPU devices can be made only once, before
    TensorFlow starts its runtime."""
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices
        )
    except RuntimeError:
        raise ConfigError(
            "train.strategy=mirrored splits the CPU into logical devices, which TensorFlow allows "
            "only before it starts: run it in a new process (`pipeline train`)"
        ) from None
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)


def even_split(examples: int, batch_size: int, replicas: int) -> tuple[int, int]:
    """(examples kept, batch size) so that every batch splits evenly across the replicas.

    Measured with Keras 3.15 and TF 2.21 on 2 logical CPU devices: a batch that splits unevenly
    fails. A first batch of 103 (52 and 51) fails `evaluate` with `AddN ... must have the same
    size and shape`, and a last batch of one (one image and none) fails in the replicas'
    convolutions. So the batch size is cut to a multiple of `replicas`, and so is the number of
    examples, which drops at most `replicas - 1` of them (none of the 6,000 validation images of
    Fashion-MNIST with 2 or 4 replicas).
    """
    if replicas <= 1:
        return examples, batch_size
    kept = examples - examples % replicas
    size = min(batch_size, kept)
    return kept, max(replicas, size - size % replicas)
