"""tf.data input pipelines: cast, cache, shuffle, batch, prefetch.

Augmentation is not here: it runs on whole batches inside the training graph
(`pipeline/augment.py`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int = 0,
    cache: bool = True,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of (float32 pixels in [0, 255], int64 labels).

    Evaluation datasets are never shuffled, so they are identical on every pass. Scaling and
    normalisation happen inside the model, the same for training and serving.
    """
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.map(lambda img, label: (tf.cast(img, tf.float32), label), num_parallel_calls=AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)
