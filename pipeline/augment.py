"""Training-time augmentation of whole batches, inside the training graph.

One layer draws every random factor for the batch at once and applies flip, one affine warp
(translation, zoom and rotation together), brightness, contrast and random erasing with a few
vectorised ops, in the same compiled train step as the model, in place of one Keras
preprocessing layer per transform in `tf.data`; docs/BENCHMARKS.md times both loops side by
side (`make bench WHAT=zoo`). It is
active only with `training=True` and never ships in a served model: training wraps the model
as `augmenter -> model` and logs the bare model.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from pipeline.config import AugmentConfig


@keras.saving.register_keras_serializable(package="pipeline")
class BatchAugment(keras.layers.Layer):
    """Random flip/translate/zoom/rotate/brightness/contrast/erasing of pixels in [0, 255]."""

    def __init__(
        self,
        *,
        flip: bool = True,
        translate: float = 0.1,
        zoom: float = 0.1,
        rotation: float = 0.0,
        contrast: float = 0.1,
        brightness: float = 0.1,
        erasing: float = 0.0,
        erasing_area: tuple[float, float] = (0.02, 0.25),
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.flip = flip
        self.translate = translate
        self.zoom = zoom
        self.rotation = rotation
        self.contrast = contrast
        self.brightness = brightness
        self.erasing = erasing
        self.erasing_area = tuple(erasing_area)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, shape, low: float, high: float):
        return keras.random.uniform(shape, low, high, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training:
            return images
        x = ops.cast(images, "float32")  # B, H, W, C
        batch = ops.shape(x)[0]
        height, width = x.shape[1], x.shape[2]

        if self.flip:
            flipped = self._uniform((batch, 1, 1, 1), 0.0, 1.0) < 0.5
            x = ops.where(flipped, ops.flip(x, axis=2), x)

        if self.translate or self.zoom or self.rotation:
            x = ops.image.affine_transform(
                x, self._warp(batch, height, width), interpolation="bilinear", fill_value=0.0
            )

        if self.brightness or self.contrast:
            mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)  # B, 1, 1, 1
            factor = self._uniform((batch, 1, 1, 1), 1.0 - self.contrast, 1.0 + self.contrast)
            shift = self._uniform((batch, 1, 1, 1), -self.brightness, self.brightness) * 255.0
            x = ops.clip((x - mean) * factor + mean + shift, 0.0, 255.0)

        if self.erasing:
            x = self._erase(x, batch, height, width)
        return ops.cast(x, images.dtype)

    def _warp(self, batch, height: int, width: int):
        """Per image, the output-to-input affine map of a zoom and rotation about the centre
        followed by a translation, flattened as `affine_transform` wants: (B, 8)."""
        scale = self._uniform((batch,), 1.0 - self.zoom, 1.0 + self.zoom)
        angle = self._uniform((batch,), -self.rotation, self.rotation) * 2.0 * math.pi
        tx = self._uniform((batch,), -self.translate, self.translate) * width
        ty = self._uniform((batch,), -self.translate, self.translate) * height
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        a0, a1 = cos, -sin
        b0, b1 = sin, cos
        a2 = cx - a0 * cx - a1 * cy + tx
        b2 = cy - b0 * cx - b1 * cy + ty
        zeros = ops.zeros_like(scale)
        return ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)

    def _erase(self, x, batch, height: int, width: int):
        """Random erasing (Zhong et al., 2017): with probability `erasing`, one rectangle of
        2-25% of the image, aspect ratio 0.3-3.3, filled with uniform noise."""
        area = self._uniform((batch,), *self.erasing_area) * height * width
        log_ratio = self._uniform((batch,), math.log(0.3), math.log(1 / 0.3))
        h = ops.minimum(ops.sqrt(area * ops.exp(log_ratio)), float(height))
        w = ops.minimum(ops.sqrt(area / ops.exp(log_ratio)), float(width))
        top = self._uniform((batch,), 0.0, 1.0) * (height - h)
        left = self._uniform((batch,), 0.0, 1.0) * (width - w)
        rows = ops.arange(height, dtype="float32")[None, :]  # 1, H
        cols = ops.arange(width, dtype="float32")[None, :]  # 1, W
        in_rows = (rows >= top[:, None]) & (rows < (top + h)[:, None])  # B, H
        in_cols = (cols >= left[:, None]) & (cols < (left + w)[:, None])  # B, W
        chosen = self._uniform((batch,), 0.0, 1.0) < self.erasing  # B
        mask = in_rows[:, :, None] & in_cols[:, None, :] & chosen[:, None, None]  # B, H, W
        noise = self._uniform(ops.shape(x), 0.0, 255.0)
        return ops.where(mask[..., None], noise, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "flip": self.flip,
            "translate": self.translate,
            "zoom": self.zoom,
            "rotation": self.rotation,
            "contrast": self.contrast,
            "brightness": self.brightness,
            "erasing": self.erasing,
            "erasing_area": list(self.erasing_area),
            "seed": self.seed,
        }


def build_augmenter(config: AugmentConfig, seed: int) -> BatchAugment | None:
    """The training augmentation of `config`, or None when it is off or every factor is zero."""
    if not config.enabled:
        return None
    if not (config.flip or any(getattr(config, key) for key in AugmentConfig.FACTORS)):
        return None
    return BatchAugment(
        flip=config.flip,
        translate=config.translate,
        zoom=config.zoom,
        rotation=config.rotation,
        contrast=config.contrast,
        brightness=config.brightness,
        erasing=config.erasing,
        seed=seed,
        name="augment",
    )


def with_augmentation(model: keras.Model, augmenter: BatchAugment | None) -> keras.Model:
    """The model to `fit`: `augmenter -> model` in one graph, or the model itself.

    The wrapped model shares its layers (and weights) with `model`, so the bare model that is
    evaluated, logged and served is trained by fitting the wrapper.
    """
    if augmenter is None:
        return model
    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    return keras.Model(inputs, model(augmenter(inputs)), name=f"{model.name}_training")
