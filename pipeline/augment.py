"""Training-time augmentation as one Keras preprocessing pipeline built from the config."""

from __future__ import annotations

import keras

from pipeline.config import AugmentConfig


def build_augmenter(config: AugmentConfig, seed: int) -> keras.layers.Pipeline | None:
    """Random flip/translate/zoom/rotate/contrast/brightness on float pixels in [0, 255].

    `keras.layers.Pipeline` (not Sequential) so it runs inside `tf.data.map` under any backend.
    Returns None when augmentation is off or every factor is zero.
    """
    if not config.enabled:
        return None
    layers: list[keras.layers.Layer] = []
    if config.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if config.translate:
        t = config.translate
        layers.append(keras.layers.RandomTranslation(t, t, fill_mode="constant", seed=seed + 1))
    if config.zoom:
        layers.append(keras.layers.RandomZoom(config.zoom, fill_mode="constant", seed=seed + 2))
    if config.rotation:
        layers.append(
            keras.layers.RandomRotation(config.rotation, fill_mode="constant", seed=seed + 3)
        )
    if config.contrast:
        layers.append(keras.layers.RandomContrast(config.contrast, seed=seed + 4))
    if config.brightness:
        layers.append(
            keras.layers.RandomBrightness(config.brightness, value_range=(0, 255), seed=seed + 5)
        )
    return keras.layers.Pipeline(layers, name="augment") if layers else None
