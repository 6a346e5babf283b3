"""Inference-mode batch norm for the served model: folded into the layer before it, or fused.

Keras 3's `BatchNormalization` at inference computes `(x - mean) * rsqrt(var + eps) * gamma +
beta` as separate elementwise ops over the whole activation, each a pass over memory, and
under `mixed_bfloat16` casts the activation to float32 and back around them. Two ways out,
chosen by `SERVING_BATCH_NORM`:

- `folded` (the default). At inference the layer is an affine map per channel,
  `x * scale + shift`. Where it directly follows a `Conv2D` or `Dense` layer whose output
  nothing else reads, that map is folded into the layer's weights: kernel * scale, and a bias
  (the layer's own, if any, times scale, plus shift). The batch norm then does nothing, and
  TensorFlow's oneDNN rewrite runs the convolution, its bias and the ReLU after it as one
  kernel (`_MklNativeFusedConv2D` in a profile of the champion, where `fused` runs a
  convolution and then a batch norm with its ReLU: a probe). On the 2-core CPU the
  VGG champion's call takes 0.654x the fused kernel's time at one image, 0.841x at 64 and
  0.799x at 256 (docs/BENCHMARKS.md, "The model call by thread pools"). Batch norm anywhere
  else is fused.
- `fused`: TensorFlow's `FusedBatchNormV3` (`is_training=False`) does the same arithmetic in
  one kernel, in float32 inside, on the bf16 activation: about 0.82x Keras' time at 64 and
  at 256 images (the same table: folded / Keras over folded / fused).
- `keras`: Keras' own ops, only to measure what the others buy.

Either way, only these layer instances' inference methods change: their classes, variables and
saved form stay as they are. A fused layer keeps Keras' code for training calls; a folded model
is for inference only, and a training call of a folded batch norm raises. The answers differ
from Keras' by float rounding: under bf16 the folded kernel is rounded once, after the scale.
tests/test_batch_norm.py checks models against Keras' method; on the VGG champion, folding
changed the label of 9 of the 10,000 Fashion-MNIST test images and none of its test accuracy
(0.9344 either way; a probe).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # TensorFlow loads with the model, not with the service module
    import keras

CHOICES = ("folded", "fused", "keras")


@dataclass(frozen=True)
class Prepared:
    """How many of a model's batch-norm layers were folded and how many fused."""

    folded: int = 0
    fused: int = 0


def _fusable(layer: keras.layers.BatchNormalization) -> bool:
    """Whether the fused kernel can compute what Keras' inference method does for `layer`."""
    import keras

    return (
        keras.backend.backend() == "tensorflow"
        and not layer.renorm
        and layer.compute_dtype in ("float32", "bfloat16", "float16")
    )


def _fused_inference_call(self, inputs, training=None, mask=None):
    """`BatchNormalization.call` for one layer: the fused kernel at inference, else Keras'."""
    import keras
    import tensorflow as tf

    if training or mask is not None or self.axis not in (-1, len(inputs.shape) - 1):
        keras_call = keras.layers.BatchNormalization.call
        return keras_call(self, inputs, training=training, mask=mask)
    x = tf.cast(inputs, self.compute_dtype)  # B, H, W, C, or B, C after a Dense layer
    channels = x.shape[-1]
    flat = len(x.shape) != 4
    if flat:  # the kernel takes 4-D input: B', 1, 1, C
        x = tf.reshape(x, [-1, 1, 1, channels])
    y, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels]),
        offset=tf.cast(self.beta, "float32") if self.center else tf.zeros([channels]),
        mean=tf.cast(self.moving_mean, "float32"),
        variance=tf.cast(self.moving_variance, "float32"),
        epsilon=self.epsilon,
        data_format="NHWC",
        is_training=False,
    )
    return tf.reshape(y, tf.shape(inputs)) if flat else y


def _batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    import keras

    # Keras' own recursive walk (private, but tests/test_batch_norm.py fails if it changes):
    # `model.layers` holds a nested model, not its layers.
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def fuse(model: keras.Model, layers: list | None = None) -> int:
    """Give `model`'s batch-norm layers (or those of `layers`) the fused inference kernel;
    returns how many took it.

    Call it before the model's first call: TensorFlow traces the predict function once.
    """
    candidates = _batch_norm_layers(model) if layers is None else layers
    chosen = [layer for layer in candidates if _fusable(layer)]
    for layer in chosen:
        layer.call = types.MethodType(_fused_inference_call, layer)
    return len(chosen)


def _model_outputs(model: keras.Model) -> set[int]:
    """ids of the tensors that `model` or a model nested in it answers with."""
    import keras

    models = [model, *model._flatten_layers(include_self=False, recursive=True)]
    return {
        id(tensor)
        for m in models
        if isinstance(m, keras.Model) and hasattr(m, "outputs") and m.outputs
        for tensor in m.outputs
    }


def _foldable_source(bn: keras.layers.BatchNormalization, outputs: set[int]):
    """The `Conv2D` or `Dense` layer whose output only `bn` reads, or None.

    Folding rewrites that layer's output, so it must feed nothing else and be called once,
    and the batch norm must normalise its channels (the last axis) with no activation between.
    """
    import keras

    if len(bn._inbound_nodes) != 1 or bn.renorm:
        return None
    tensors = bn._inbound_nodes[0].arguments.keras_tensors
    if len(tensors) != 1 or id(tensors[0]) in outputs:
        return None
    source_tensor = tensors[0]
    layer = source_tensor._keras_history.operation
    if type(layer) not in (keras.layers.Conv2D, keras.layers.Dense):
        return None
    rank = len(source_tensor.shape)
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    if not (
        channels_last
        and bn.axis in (-1, rank - 1)
        and len(layer._inbound_nodes) == 1
        and len(layer._outbound_nodes) == 1
        and layer.activation in (None, keras.activations.linear)
        and getattr(layer, "quantization_mode", None) is None
        and not getattr(layer, "lora_enabled", False)
    ):
        return None
    return layer


def _folded_weights(layer, bn) -> tuple:
    """`layer`'s kernel and bias with `bn`'s inference map folded in, in its compute dtype."""
    import numpy as np
    import tensorflow as tf

    variance = np.asarray(bn.moving_variance, np.float64)
    scale = 1.0 / np.sqrt(variance + bn.epsilon)
    if bn.scale:
        scale = scale * np.asarray(bn.gamma, np.float64)
    bias = np.asarray(layer.bias, np.float64) if layer.use_bias else 0.0
    shift = (bias - np.asarray(bn.moving_mean, np.float64)) * scale
    if bn.center:
        shift = shift + np.asarray(bn.beta, np.float64)
    kernel = np.asarray(layer.kernel, np.float64) * scale  # output channels are the last axis
    dtype = layer.compute_dtype
    return tf.constant(kernel, dtype), tf.constant(np.broadcast_to(shift, scale.shape), dtype)


def _folded_conv_call(self, inputs, kernel, bias, training=None):
    import tensorflow as tf

    return tf.nn.bias_add(self.convolution_op(tf.cast(inputs, kernel.dtype), kernel), bias)


def _folded_dense_call(self, inputs, kernel, bias, training=None):
    import keras
    import tensorflow as tf

    return tf.nn.bias_add(keras.ops.matmul(tf.cast(inputs, kernel.dtype), kernel), bias)


def _folded_away_call(self, inputs, training=None, mask=None):
    """A folded batch norm: the layer before it already computed it."""
    if training:
        raise RuntimeError(
            f"{self.name} is folded into the layer before it for serving "
            "(serving/batch_norm.py); train the model as saved, not as served"
        )
    return inputs


def fold(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Fold each batch norm that directly follows a `Conv2D` or `Dense` layer into that
    layer's weights (the module doc says which); returns the batch norms left as they were.

    Call it before the model's first call: TensorFlow traces the predict function once.
    """
    import functools

    import keras

    outputs = _model_outputs(model)
    left = []
    for bn in _batch_norm_layers(model):
        layer = _foldable_source(bn, outputs)
        if layer is None:
            left.append(bn)
            continue
        kernel, bias = _folded_weights(layer, bn)
        call = _folded_conv_call if isinstance(layer, keras.layers.Conv2D) else _folded_dense_call
        layer.call = types.MethodType(functools.partial(call, kernel=kernel, bias=bias), layer)
        bn.call = types.MethodType(_folded_away_call, bn)
    return left


def prepare(model: keras.Model, setting: str) -> Prepared:
    """`model`'s batch norm as `setting` (`SERVING_BATCH_NORM`) computes it at inference."""
    if setting == "keras":
        return Prepared()
    if setting == "fused":
        return Prepared(fused=fuse(model))
    total = len(_batch_norm_layers(model))
    left = fold(model)
    return Prepared(folded=total - len(left), fused=fuse(model, left))
