"""Helpers the tests share: tools, small inputs, and the benchmarks' loopback helpers."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
from pathlib import Path

import numpy as np

from pipeline import paths
from pipeline.data import DataSpec
from pipeline.model_card import ModelCard

#: The only project modules a bento holds besides serving/ (bentofile.yaml): those serving
#: shares with training, which import no training code.
SHARED_MODULES = frozenset(
    {
        "pipeline/__init__.py",
        "pipeline/batch_norm.py",
        "pipeline/features.py",
        "pipeline/model_card.py",
        "pipeline/preprocess.py",
        "pipeline/scoring.py",
        "pipeline/tta.py",
    }
)
#: Where Debian's dataset-fashion-mnist puts the real IDX files.
FASHION_DIR = paths.SYSTEM_DATASETS / "fashion-mnist"


def tool(name: str) -> str:
    """A console script of this environment (`pipeline`, `bentoml`, `mlflow`)."""
    return str(paths.BIN_DIR / name)


def quick_overrides(store: Path, *extra: str) -> list[str]:
    """The quick profile on a temporary store, small enough for CI."""
    return [
        f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
        f"tracking.checkpoint_dir={store}/checkpoints",
        *extra,
    ]


def spec_for(shape, classes: int = 10) -> DataSpec:
    """A data spec of any input shape, for building models without a dataset."""
    c = shape[-1]
    return DataSpec("t", shape, tuple(str(i) for i in range(classes)), (0.3,) * c, (0.3,) * c)


def garments(count: int, seed: int = 0) -> np.ndarray:
    """`count` 28x28 grayscale images (N, 28, 28, 1, uint8) of a textured garment-like shape
    with one sleeve, placed off-centre on black: structure for decoding and augmentation tests
    that need no dataset on disk. No two are alike and none is left-right symmetric."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 28, 28, 1), np.uint8)
    for i in range(count):
        top, left = (int(v) for v in rng.integers(2, 9, 2))
        height, width = (int(v) for v in rng.integers(10, 17, 2))
        shade = float(rng.integers(110, 220))
        image = np.zeros((28, 28), np.float32)
        image[top : top + height, left : left + width] = shade
        sleeve = int(rng.integers(3, 7))
        image[top : top + 4, left + width : left + width + sleeve] = shade * 0.7
        image += rng.normal(0.0, 14.0, image.shape).astype(np.float32) * (image > 0)
        out[i, ..., 0] = np.clip(image, 0, 255).astype(np.uint8)
    return out


#: A flip-averaged VGG's model card, as `package_run` writes it: what card tests vary.
CARD = ModelCard(
    architecture="vgg",
    dataset="fashion_mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover"),
    input_shape=(28, 28, 1),
    mean=(0.286,),
    std=(0.353,),
    normalisation="pixels/255, then (x - mean) / std per channel, inside the model",
    precision="mixed_bfloat16",
    test_time_flip=True,
    run_id="0a019b9e",
    registered_model="cnn-classifier",
    registry_version="2",
    test_accuracy=0.9334,
    test_macro_f1=0.9333,
)


def nested_batch_norm_model(policy: str = "float32", axis: int = -1):
    """Conv -> BN -> ReLU -> Dense -> BN, inside an outer model as the test-time views nest
    the network, with moving statistics and scales far from the initial ones: what the
    served model's batch norm and model call are checked on (tests/test_batch_norm.py,
    tests/test_model.py)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, use_bias=False, dtype=policy)(inputs)
    x = keras.layers.BatchNormalization(axis=axis, dtype=policy)(x)
    x = keras.layers.Activation("relu", dtype=policy)(x)
    x = keras.layers.Flatten(dtype=policy)(x)
    x = keras.layers.Dense(3, use_bias=False, dtype=policy)(x)
    x = keras.layers.BatchNormalization(center=False, dtype=policy)(x)
    network = keras.Model(inputs, x, name="network")
    rng = np.random.default_rng(1)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for weight in layer.weights:
                low = 0.2 if "variance" in weight.path or "gamma" in weight.path else -2.0
                weight.assign(rng.uniform(low, 2.0, weight.shape).astype(np.float32))
    outer_inputs = keras.Input((6, 6, 2))
    return keras.Model(outer_inputs, network(outer_inputs) * 1.0, name="views")


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@contextlib.contextmanager
def serving(bento_tag: str, env: dict[str, str], log_path: Path):
    """`bentoml serve TAG` (a bento, or a service's import path) in its own process group,
    ready; stopped by pid on the way out."""
    import pytest

    from bench.processes import free_port, wait_until_ready

    port = free_port()
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [tool("bentoml"), "serve", bento_tag, "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, **env},
        cwd=paths.PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_ready(f"{url}/readyz", proc, timeout_s=240):
            pytest.fail("server did not start:\n" + log_path.read_text()[-4000:])
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
