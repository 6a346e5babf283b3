"""Batch normalisation in fewer, faster kernels: fused while training, folded or fused at
inference. One module, used by `pipeline train` and by the service.

Keras 3's `BatchNormalization` computes the statistics and the normalisation with separate
ops, each a pass over memory (and under `mixed_bfloat16` casts around them).

- **Training** (`fused_batch_norm()`, `train.fused_batch_norm`): within the block, the
  training-mode computation of every 4-D batch norm is TensorFlow's `FusedBatchNormV3`, one
  kernel each way; Keras' own method is back on exit. The moving statistics are updated
  exactly as Keras does (biased batch variance, the layer's momentum). TensorFlow only:
  under JAX, XLA fuses the batch norm's ops itself, and the block changes nothing.
- **Inference** (`prepare_for_inference()`, what the service runs): at inference a batch norm
  is an affine map per channel, `x * scale + shift`. Where it directly follows a `Conv2D` or
  `Dense` layer whose output nothing else reads, that map is folded into the layer's weights
  (kernel * scale, and a bias), and TensorFlow's oneDNN rewrite runs the convolution, its bias
  and the ReLU after it as one kernel (under JAX, XLA fuses the same). Any other batch norm
  gets the fused kernel at inference (`fuse()`), under TensorFlow only.

Only these layer instances' methods change (or, while training, the class's within the
block): classes, variables and saved form stay as they are, so a trained model is a plain
Keras model. A folded model is for inference only: a training call of a folded batch norm
raises. Answers differ from Keras' by float rounding (tests/test_batch_norm.py,
tests/test_batch_norm_training.py). docs/BENCHMARKS.md times each against Keras' own ops.

"""

from __future__ import annotations

import contextlib
import functools
import types
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import numpy as np

# --- training ---------------------------------------------------------------------------------

#: Keras' own `BatchNormalization.call`, which the training kernel replaces within the block.
_KERAS_CALL = keras.layers.BatchNormalization.call


def _training_fusable(layer, inputs, training, mask) -> bool:

    return (
        bool(training)
        and layer.trainable
        and mask is None
        and not layer.renorm
        and len(inputs.shape) == 4
        and layer.axis in (-1, 3)
        and keras.backend.backend() == "tensorflow"
    )


def _fused_training_call(self, inputs, training=None, mask=None):

    if not _training_fusable(self, inputs, training, mask):
        return _KERAS_CALL(self, inputs, training=training, mask=mask)
    import tensorflow as tf

    x = tf.cast(inputs, "float32")  # B, H, W, C: statistics in float32, as Keras does
    channels = x.shape[-1]
    gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
    beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=gamma,
        offset=beta,
        mean=tf.constant([], "float32"),
        variance=tf.constant([], "float32"),
        epsilon=self.epsilon,
        data_format="NHWC",
        is_training=True,
    )
    # The kernel returns the unbiased (n - 1) batch variance; Keras tracks the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), "float32")
    variance = variance * (count - 1.0) / count
    momentum = self.momentum
    self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
    self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
    return tf.cast(y, self.compute_dtype)


@contextlib.contextmanager
def fused_batch_norm(enabled: bool = True) -> Iterator[None]:
    """Within the block, training-mode batch norm uses TensorFlow's fused kernel (under
    TensorFlow; under another backend the block changes nothing)."""
    if not enabled or keras.backend.backend() != "tensorflow":
        yield
        return

    keras.layers.BatchNormalization.call = _fused_training_call
    try:
        yield
    finally:
        keras.layers.BatchNormalization.call = _KERAS_CALL


# --- inference --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """How many of a model's batch-norm layers were folded and how many fused."""

    folded: int = 0
    fused: int = 0


def _inference_fusable(layer: keras.layers.BatchNormalization) -> bool:
    """Whether the fused kernel can compute what Keras' inference method does for `layer`."""

    return (
        keras.backend.backend() == "tensorflow"
        and not layer.renorm
        and layer.compute_dtype in ("float32", "bfloat16", "float16")
    )


def _fused_inference_call(self, inputs, training=None, mask=None):
    """`BatchNormalization.call` for one layer: the fused kernel at inference, else Keras'."""

    if training or mask is not None or self.axis not in (-1, len(inputs.shape) - 1):
        keras_call = keras.layers.BatchNormalization.call
        return keras_call(self, inputs, training=training, mask=mask)
    import tensorflow as tf

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
    chosen = [layer for layer in candidates if _inference_fusable(layer)]
    for layer in chosen:
        layer.call = types.MethodType(_fused_inference_call, layer)
    return len(chosen)


def _model_outputs(model: keras.Model) -> set[int]:
    """ids of the tensors that `model` or a model nested in it answers with."""

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
    shift = np.broadcast_to(shift, scale.shape)
    return keras.ops.convert_to_tensor(kernel, dtype), keras.ops.convert_to_tensor(shift, dtype)


def _add_bias(x, bias):
    """x + bias over the last axis: TensorFlow's BiasAdd, the op its oneDNN rewrite fuses with
    the convolution and the ReLU after it; a plain add elsewhere, which XLA fuses."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.nn.bias_add(x, bias)
    return keras.ops.add(x, bias)


def _folded_conv_call(self, inputs, kernel, bias, training=None):

    return _add_bias(self.convolution_op(keras.ops.cast(inputs, kernel.dtype), kernel), bias)


def _folded_dense_call(self, inputs, kernel, bias, training=None):

    return _add_bias(keras.ops.matmul(keras.ops.cast(inputs, kernel.dtype), kernel), bias)


def _folded_away_call(self, inputs, training=None, mask=None):
    """A folded batch norm: the layer before it already computed it."""
    if training:
        raise RuntimeError(
            f"{self.name} is folded into the layer before it for serving "
            "(pipeline/batch_norm.py); train the model as saved, not as served"
        )
    return inputs


def fold(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Fold each batch norm that directly follows a `Conv2D` or `Dense` layer into that
    layer's weights (the module doc says which); returns the batch norms left as they were.

    Call it before the model's first call: TensorFlow traces the predict function once.
    """

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


def prepare_for_inference(model: keras.Model) -> Prepared:
    """Fold what can be folded, fuse the other batch norms; call it before the first call."""
    total = len(_batch_norm_layers(model))
    left = fold(model)
    return Prepared(folded=total - len(left), fused=fuse(model, left))
