"""Mixed precision: the policy `auto` picks, models built under it, and what a saved model keeps."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.precision import (
    auto_precision,
    cpu_flags,
    dtype_policy,
    model_precision,
    resolve,
)
from tests.helpers import spec_for


@pytest.mark.parametrize(
    ("capability", "flags", "expected"),
    [
        ((9, 0), set(), "mixed_bfloat16"),  # H100
        ((8, 0), {"avx2"}, "mixed_bfloat16"),  # A100: the GPU decides, not the host CPU
        ((7, 5), {"avx512_bf16"}, "mixed_float16"),  # T4: tensor cores without bf16
        ((6, 1), set(), "float32"),  # Pascal
        (None, {"avx2", "avx512f", "avx512_bf16"}, "mixed_bfloat16"),  # Zen 4, Cooper Lake
        (None, {"avx2", "amx_bf16", "amx_tile"}, "mixed_bfloat16"),  # Sapphire Rapids
        (None, {"avx2", "avx512f"}, "float32"),  # bf16 would be emulated: slower
    ],
)
def test_auto_picks_bf16_only_where_the_hardware_computes_in_it(capability, flags, expected):
    assert auto_precision(capability, flags) == expected


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\nbugs\t\t: none\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_auto_on_this_machine_follows_its_cpu():
    expected = "mixed_bfloat16" if cpu_flags() & {"avx512_bf16", "amx_bf16"} else "float32"
    assert resolve("auto") == expected
    assert resolve("mixed_float16") == "mixed_float16"


def test_policy_is_restored_even_after_an_error():
    before = keras.config.dtype_policy().name
    with pytest.raises(RuntimeError), dtype_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
        raise RuntimeError
    assert keras.config.dtype_policy().name == before


@pytest.mark.parametrize("name", ["lenet", "vgg"])
def test_mixed_model_computes_in_bf16_keeps_float32_weights_and_logits(name, tmp_path):
    keras.utils.set_random_seed(0)
    with dtype_policy("mixed_bfloat16"):
        model = build(name)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs and all(layer.compute_dtype == "bfloat16" for layer in convs)
    assert {w.dtype for w in model.weights} == {"float32"}
    assert model_precision(model) == "mixed_bfloat16"

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 28, 28, 1)).astype(np.float32)
    y = np.arange(16) % 10
    logits = model(x, training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"

    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn)
    before = float(loss_fn(y, model(x, training=False)))
    for _ in range(5):
        model.train_on_batch(x, y)
    assert float(loss_fn(y, model(x, training=False))) < before

    # The saved file keeps each layer's policy: loaded under the float32 default, it still
    # computes in bf16 and predicts exactly what the trained model did.
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.config.dtype_policy().name == "float32"
    restored = keras.saving.load_model(path)
    assert model_precision(restored) == "mixed_bfloat16"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored(x, training=False)),
        keras.ops.convert_to_numpy(model(x, training=False)),
    )


def test_float16_training_gets_loss_scaling():
    with dtype_policy("mixed_float16"):
        model = build("lenet")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)


def test_float32_model_reports_float32():
    assert model_precision(build("lenet")) == "float32"


def build(name: str) -> keras.Model:
    from pipeline.models import build_model

    options = {"preset": "small", "batch_norm": True} if name == "vgg" else {}
    return build_model(name, spec_for((28, 28, 1)), dropout=0.0, **options)
