"""The JAX backend on this CPU with TensorFlow blocked: a real quick sweep, its promotion and a
real BentoML server; models crossing the backends both ways; DataParallel on 2 simulated
devices (pipeline/backend.py, pipeline/distribution.py, serving/model.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import keras
import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline import paths
from pipeline.scoring import softmax
from tests.helpers import png, quick_overrides, serving, tool

pytestmark = pytest.mark.slow

#: On PYTHONPATH, it makes `import tensorflow` fail in every process (its docstring).
WITHOUT_TENSORFLOW = paths.PROJECT_ROOT / "tests" / "without_tensorflow"
JAX = {
    "KERAS_BACKEND": "jax",
    "PYTHONPATH": os.pathsep.join([str(WITHOUT_TENSORFLOW), str(paths.PROJECT_ROOT)]),
}
TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def run(args: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args,
        env={**os.environ, **env},
        cwd=paths.PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def quick_sweep(store, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    config = str(paths.CONFIG_DIR / "quick.yaml")
    return run(
        [tool("pipeline"), "train", "--config", config, *quick_overrides(store, *extra)], env
    )


def sweep_runs(store) -> list:
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("cnn-zoo-quick")
    return [r for r in client.search_runs([experiment.experiment_id]) if "model" in r.data.tags]


@pytest.fixture(scope="module")
def jax_sweep(tmp_path_factory):
    """The quick sweep trained, evaluated and promoted under JAX, TensorFlow blocked."""
    store = tmp_path_factory.mktemp("jax-sweep")
    # Its own name: under the shared one, this champion would become the `latest` that the
    # service tests' bento packs.
    proc = quick_sweep(store, JAX, "tracking.registered_model=cnn-jax-test")
    (tag,) = re.findall(r"BentoML (\S+)\s*$", proc.stdout, re.M)
    return {"store": store, "bento_model": tag, "stdout": proc.stdout}


def test_tensorflow_is_blocked_in_the_jax_environment():
    """The guard can fail: under it, importing TensorFlow raises, though it is installed."""
    code = "import tensorflow"
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **JAX}, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_the_quick_sweep_trains_and_promotes_under_jax_without_tensorflow(jax_sweep):
    runs = sweep_runs(jax_sweep["store"])
    assert {r.data.tags["model"] for r in runs} == {"lenet", "vgg"}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["backend"] == "jax"
        assert "version.tensorflow" not in r.data.tags and "version.jax" in r.data.tags
        params = r.data.params
        assert params["backend"] == "jax"
        assert params["backend.input_pipeline"] == "keras.utils.PyDataset"
        assert params["backend.fused_batch_norm"].startswith("left out")
        assert r.data.metrics["test_accuracy"] > 0.3  # 2 epochs on 2,000 images; chance 0.1
    import bentoml

    card = bentoml.models.get(jax_sweep["bento_model"]).info.metadata
    assert card["backend"] == "jax"


def test_predict_and_describe_run_under_jax_without_tensorflow(jax_sweep, fashion, tmp_path):
    image = tmp_path / "shoe.png"
    image.write_bytes(png(fashion.x_test[0, ..., 0]))
    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{jax_sweep['store']}/mlflow.db"}
    champion = "models:/cnn-jax-test@champion"
    predicted = run(
        [tool("pipeline"), "predict", str(image), "--model-uri", champion], {**JAX, **store}
    )
    (line,) = [ln for ln in predicted.stdout.splitlines() if ln.startswith(f"{image}: ")]
    assert len(line.split(", ")) == 3  # the top 3 labels
    described = run([tool("pipeline"), "describe", "googlenet"], JAX)
    assert "total multiply-accumulates per image" in described.stdout


@pytest.fixture(scope="module")
def jax_server(jax_sweep, tmp_path_factory):
    """`bentoml serve` of the JAX champion under JAX, TensorFlow blocked in every process."""
    log = tmp_path_factory.mktemp("jax-serve") / "serve.log"
    env = {**JAX, "SERVING_MODEL": jax_sweep["bento_model"], "SERVING_MAX_BATCH_SIZE": "64"}
    with serving("serving.service:Classifier", env, log) as url:
        yield url


def test_a_real_server_on_jax_answers_real_pngs_as_the_model_does(jax_sweep, jax_server, fashion):
    """Each answer is the model's own (the .keras file under TensorFlow here) to 1e-5, at
    request sizes never compiled; and none of them compiled anything."""
    import bentoml

    path = bentoml.models.get(jax_sweep["bento_model"]).path_of("model.keras")
    model = keras.saving.load_model(path, compile=False)
    images = fashion.x_test[:40]
    expected = softmax(np.asarray(model.predict(images.astype(np.float32), verbose=0)))
    start = 0
    for size in (1, 3, 5, 17, 14):  # 40 images in all; only 1 is a compiled size
        files = [
            ("images", (f"{i}.png", png(images[i, ..., 0]), "image/png"))
            for i in range(start, start + size)
        ]
        answer = httpx.post(f"{jax_server}/classify", files=files, timeout=120)
        assert answer.status_code == 200, answer.text
        for prediction in answer.json():
            probs = expected[start + prediction["index"]]
            for label in prediction["top"]:
                index = list(fashion.class_names).index(label["label"])
                assert abs(label["probability"] - probs[index]) < 1e-5
            assert prediction["top"][0]["label"] == fashion.class_names[probs.argmax()]
        start += size
    info = httpx.post(f"{jax_server}/metadata", json={}, timeout=30).json()
    assert (info["backend"], info["served_backend"]) == ("jax", "jax")
    assert info["compiled_batch_sizes"] == [1, 2, 4, 8, 16, 32, 64]
    assert info["compiles_after_start"] == 0
    assert info["fused_batch_norm_layers"] == 0 and len(info["left_out"]) == 2


def test_a_corrupt_upload_gets_a_4xx_with_its_reason_under_jax(jax_server):
    files = [("images", ("bad.png", b"\x89PNG\r\n\x1a\nnot a png", "image/png"))]
    answer = httpx.post(f"{jax_server}/classify", files=files, timeout=60)
    assert answer.status_code == 415, answer.text
    assert "image 0: not an image" in answer.json()[0]["error"]


def served_probabilities(tag: str, images_path, out, env: dict[str, str]) -> dict:
    proc = run(
        [sys.executable, "-m", "tests.served_predictions", tag, str(images_path), str(out)], env
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("SERVED "))
    return {**json.loads(line[7:]), "probs": np.load(out)}


@pytest.mark.parametrize("trained_on", ["tensorflow", "jax"])
def test_a_model_serves_on_the_other_backend_with_the_same_labels(
    trained_on, sweep, jax_sweep, fashion, tmp_path
):
    """500 test images through the service's model path under each backend: the same top-1
    label for every image, whichever backend trained the model."""
    tag = sweep["promotion"].bento_tag if trained_on == "tensorflow" else jax_sweep["bento_model"]
    images = tmp_path / "images.npy"
    np.save(images, fashion.x_test[:500])
    on_tf = served_probabilities(tag, images, tmp_path / "tf.npy", {})
    on_jax = served_probabilities(tag, images, tmp_path / "jax.npy", JAX)
    assert (on_tf["backend"], on_jax["backend"]) == ("tensorflow", "jax")
    assert on_tf["trained_on"] == on_jax["trained_on"] == trained_on
    assert not on_jax["tensorflow_imported"]
    np.testing.assert_array_equal(on_tf["probs"].argmax(1), on_jax["probs"].argmax(1))
    np.testing.assert_allclose(on_tf["probs"], on_jax["probs"], atol=1e-5)
    # 500 images in pieces of 64 padded up: nothing compiled after start-up, and the count
    # does see a call of a size that was not compiled.
    assert on_jax["compiles_after_requests"] == 0
    assert on_jax["compiles_after_an_unpadded_call"] == 1


def test_data_parallel_trains_on_two_simulated_devices(tmp_path):
    """`train.distribution=data_parallel` under JAX over 2 XLA CPU devices: the quick sweep,
    with sizes chosen so that the last training batch and the validation set are odd."""
    extra = ["train.distribution=data_parallel", "tracking.promote=false", "data.train_limit=1024"]
    quick_sweep(tmp_path, {**JAX, **TWO_DEVICES}, *extra)
    runs = sweep_runs(tmp_path)
    assert {r.data.tags["model"] for r in runs} == {"lenet", "vgg"}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["train.replicas"] == "2"
        assert r.data.params["data.size.val"] == "103"  # 102 of them validate, 51 a device
        assert "test_accuracy" in r.data.metrics
    uneven = subprocess.run(
        [
            tool("pipeline"), "train", "--config", str(paths.CONFIG_DIR / "quick.yaml"),
            *quick_overrides(tmp_path / "uneven", *extra, "train.batch_size=127"),
        ],
        env={**os.environ, **JAX, **TWO_DEVICES}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert uneven.returncode != 0
    assert "must be a multiple of the 2 replicas of train.distribution=data_parallel" in (
        uneven.stderr
    )


def test_each_distribution_is_refused_under_the_other_backend(tmp_path):
    for backend, distribution, hint in (
        ({}, "data_parallel", "set KERAS_BACKEND=jax"),
        (JAX, "mirrored", "use train.distribution=data_parallel"),
    ):
        proc = subprocess.run(
            [
                tool("pipeline"), "train", "--config", str(paths.CONFIG_DIR / "quick.yaml"),
                *quick_overrides(tmp_path, f"train.distribution={distribution}", "models=[lenet]"),
            ],
            env={**os.environ, **backend}, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode != 0
        assert hint in proc.stderr.strip().splitlines()[-1]
