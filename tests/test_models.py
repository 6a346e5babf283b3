"""The model zoo: shapes, learning, save/load, exact parameter counts, and NumPy references."""

from __future__ import annotations

import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.describe import describe, output_size, totals
from pipeline.models import REGISTRY, build_model
from tests.helpers import spec_for, tool

SHAPES = [(28, 28, 1), (32, 32, 3)]


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {
        shape: (rng.integers(0, 256, (8, *shape)).astype(np.float32), np.arange(8) % 10)
        for shape in SHAPES
    }


@pytest.mark.parametrize("shape", SHAPES, ids=["28x28x1", "32x32x3"])
@pytest.mark.parametrize("name", list(REGISTRY))
def test_builds_and_round_trips(name, shape, batch, tmp_path):
    """Every architecture takes both input shapes and saves and loads as a plain Keras model
    (tests/test_training.py shows each one learns)."""
    keras.utils.set_random_seed(0)
    model = build_model(name, spec_for(shape), dropout=0.0, width=0.25)
    x, _ = batch[shape]
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (8, 10)
    if shape != SHAPES[0]:
        return  # saving does not depend on the input shape
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored(x, training=False)), logits)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("vgg", {"preset": "vgg16"}, "'model_options.vgg.preset' must be one of"),
        ("vgg", {"blocks": [[0, 64]]}, "'model_options.vgg.blocks' must be"),
        ("vgg", {"blocks": "wide"}, "'model_options.vgg.blocks' must have 2 items"),
        ("alexnet", {"fc_units": 0}, "'model_options.alexnet.fc_units' must be in"),
        ("lenet", {"classic": 3}, "'model_options.lenet.classic' must be of type bool"),
        ("nin", {"width": 0}, "'model_options.nin.width' must be in"),
        ("googlenet", {"stem": 3}, "unknown config key 'model_options.googlenet.stem'"),
    ],
)
def test_model_options_are_typed_and_checked_when_the_config_loads(name, options, message):
    from pipeline.config import load_config
    from pipeline.errors import ConfigError

    overrides = [f"models=[{name}]"] + [
        f"model_options.{name}.{key}={value}" for key, value in options.items()
    ]
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_lenet_parameter_count():
    # conv1 6*(5*5*1)+6=156, conv2 16*(5*5*6)+16=2416, fc 400*120+120=48120,
    # 120*84+84=10164, 84*10+10=850.
    assert build_model("lenet", spec_for((28, 28, 1))).count_params() == 61_706


def test_lenet_classic_variant_uses_sigmoid_and_average_pooling():
    model = build_model("lenet", spec_for((28, 28, 1)), classic=True)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "AveragePooling2D" in kinds and "MaxPooling2D" not in kinds
    assert model.get_layer("conv1_act").activation.__name__ == "sigmoid"
    assert model.count_params() == 61_706


def test_vgg_small_parameter_count_by_hand():
    convs = [(1, 32), (1, 64), (2, 128)]
    params, channels = 0, 1
    for n, filters in convs:
        for _ in range(n):
            params += 3 * 3 * channels * filters + filters
            channels = filters
    side = 28
    for _ in convs:
        side = -(-side // 2)  # 'same' 2x2 pools: 28 -> 14 -> 7 -> 4
    flat = side * side * channels
    params += flat * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    model = build_model("vgg", spec_for((28, 28, 1)), preset="small")
    assert model.count_params() == params == 833_162


def test_batch_norm_and_width_are_configuration():
    base = build_model("vgg", spec_for((28, 28, 1)))
    narrow = build_model("vgg", spec_for((28, 28, 1)), width=0.5)
    with_bn = build_model("vgg", spec_for((28, 28, 1)), batch_norm=True)
    assert narrow.count_params() < base.count_params() / 3
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in with_bn.layers)


def test_nin_has_no_dense_layer_and_googlenet_has_four_path_inceptions():
    nin = build_model("nin", spec_for((28, 28, 1)))
    assert not any(isinstance(layer, keras.layers.Dense) for layer in nin.layers)
    assert isinstance(nin.layers[-1], keras.layers.GlobalAveragePooling2D)
    google = build_model("googlenet", spec_for((28, 28, 1)))
    concat = google.get_layer("inception3_a_concat")
    assert len(concat.input) == 4
    assert concat.output.shape[-1] == 64 + 128 + 32 + 32


def test_describe_totals_match_keras_and_shapes_follow_the_formula():
    model = build_model("alexnet", spec_for((28, 28, 1)))
    table = describe(model)
    assert totals(table)["params"] == model.count_params()
    conv1 = table.set_index("layer").loc["conv1"]
    assert conv1.output_shape == "28x28x96"
    assert conv1.fc_equivalent_params == 28 * 28 * (28 * 28 * 96) + 28 * 28 * 96
    assert conv1.macs == 28 * 28 * 96 * 5 * 5
    assert table.set_index("layer").loc["pool1"].output_shape == "13x13x96"  # (28-3)//2+1


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize(("n", "kernel"), [(28, 5), (13, 3), (7, 1), (32, 11), (9, 4)])
def test_output_size_formula_matches_keras(n, kernel, stride, padding):
    layer = keras.layers.Conv2D(1, kernel, strides=stride, padding=padding)
    expected = layer.compute_output_shape((1, n, n, 1))[1]
    assert output_size(n, kernel, stride, padding) == expected


@pytest.mark.slow  # a `pipeline` process of its own
def test_cli_describe_prints_the_table():
    proc = subprocess.run(
        [tool("pipeline"), "describe", "lenet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "total parameters: 61,706" in proc.stdout
    assert "3,692,640" in proc.stdout  # conv1 as a fully connected layer
    assert "total multiply-accumulates per image: 416,520" in proc.stdout


# --- NumPy references ---------------------------------------------------------------------------


def np_pad(x, kernel, stride, padding):
    if padding == "valid":
        return x
    total_h = max((-(-x.shape[1] // stride) - 1) * stride + kernel[0] - x.shape[1], 0)
    total_w = max((-(-x.shape[2] // stride) - 1) * stride + kernel[1] - x.shape[2], 0)
    return np.pad(
        x,
        (
            (0, 0),
            (total_h // 2, total_h - total_h // 2),
            (total_w // 2, total_w - total_w // 2),
            (0, 0),
        ),
    )


def np_conv2d(x, w, b, stride, padding):
    """Cross-correlation: x (N,H,W,C), w (kh,kw,C,F), b (F,) -> (N,H',W',F)."""
    kh, kw, _, filters = w.shape
    xp = np_pad(x, (kh, kw), stride, padding)
    out_h = (xp.shape[1] - kh) // stride + 1
    out_w = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2])) + b
    return out


def np_conv2d_grads(x, w, stride, padding, upstream):
    """Gradients of sum(upstream * conv(x)) with respect to x, w and b."""
    kh, kw, _, _ = w.shape
    xp = np_pad(x, (kh, kw), stride, padding)
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for i in range(upstream.shape[1]):
        for j in range(upstream.shape[2]):
            sl = (
                slice(None),
                slice(i * stride, i * stride + kh),
                slice(j * stride, j * stride + kw),
            )
            g = upstream[:, i, j, :]  # N, F
            dw += np.tensordot(xp[sl], g, axes=([0], [0]))
            dxp[sl] += np.tensordot(g, w, axes=([1], [3]))
    top = (xp.shape[1] - x.shape[1]) // 2
    left = (xp.shape[2] - x.shape[2]) // 2
    dx = dxp[:, top : top + x.shape[1], left : left + x.shape[2], :]
    return dx, dw, upstream.sum(axis=(0, 1, 2))


def np_maxpool(x, size, stride):
    """Max pooling (valid) and the mask of the arg-max positions that receive the gradient."""
    out_h = (x.shape[1] - size) // stride + 1
    out_w = (x.shape[2] - size) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, x.shape[3]))
    mask = np.zeros_like(x)
    for n in range(x.shape[0]):
        for c in range(x.shape[3]):
            for i in range(out_h):
                for j in range(out_w):
                    window = x[n, i * stride : i * stride + size, j * stride : j * stride + size, c]
                    out[n, i, j, c] = window.max()
                    a, b = np.unravel_index(window.argmax(), window.shape)
                    mask[n, i * stride + a, j * stride + b, c] += 1
    return out, mask


@pytest.mark.parametrize(
    ("stride", "padding"), [(1, "valid"), (2, "same"), (1, "same"), (2, "valid")]
)
def test_conv2d_matches_numpy_reference(stride, padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 9, 8, 3)).astype(np.float32)
    layer = keras.layers.Conv2D(4, (3, 2), strides=stride, padding=padding)
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=4).astype(np.float32))
    w, b = (keras.ops.convert_to_numpy(v) for v in (layer.kernel, layer.bias))

    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = layer(xt)
        upstream = tf.constant(rng.normal(size=y.shape).astype(np.float32))
        objective = tf.reduce_sum(y * upstream)
    dx, dw, db = tape.gradient(objective, [xt, layer.kernel, layer.bias])

    np.testing.assert_allclose(y.numpy(), np_conv2d(x, w, b, stride, padding), rtol=1e-4, atol=1e-4)
    ref_dx, ref_dw, ref_db = np_conv2d_grads(x, w, stride, padding, upstream.numpy())
    np.testing.assert_allclose(dx.numpy(), ref_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw.numpy(), ref_dw, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db.numpy(), ref_db, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("size", "stride"), [(2, 2), (3, 2)])
def test_maxpool_and_its_backward_mask_match_numpy(size, stride):
    rng = np.random.default_rng(2)
    x = rng.permutation(2 * 7 * 7 * 3).reshape(2, 7, 7, 3).astype(np.float32)  # no ties
    xt = tf.Variable(x)
    with tf.GradientTape() as tape:
        y = keras.layers.MaxPooling2D(size, strides=stride)(xt)
        total = tf.reduce_sum(y)
    grad = tape.gradient(total, xt).numpy()
    ref, mask = np_maxpool(x, size, stride)
    np.testing.assert_array_equal(y.numpy(), ref)
    np.testing.assert_array_equal(grad, mask)


@pytest.mark.parametrize(("blocks", "depth"), [(3, 20), (1, 8)])
def test_resnet_is_the_papers_small_image_network(blocks, depth):
    """He et al. 2015, section 4.2: 6n + 2 weighted layers, three stages at 28, 14 and 7 px,
    each block adding its input back, projections where the shape changes, then GAP."""
    model = build_model("resnet", spec_for((28, 28, 1)), blocks=blocks)
    convs = [c for c in model.layers if isinstance(c, keras.layers.Conv2D)]
    projections = [c for c in convs if c.name.endswith("_project")]
    dense = [d for d in model.layers if isinstance(d, keras.layers.Dense)]
    assert len(convs) - len(projections) + len(dense) == depth
    assert len(projections) == 2 and all(p.kernel_size == (1, 1) for p in projections)
    adds = [a for a in model.layers if isinstance(a, keras.layers.Add)]
    assert len(adds) == 3 * blocks
    assert [a.output.shape[1:] for a in adds[::blocks]] == [(28, 28, 16), (14, 14, 32), (7, 7, 64)]
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == (
        len(convs)
    )
