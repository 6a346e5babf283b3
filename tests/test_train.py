"""End-to-end training on the quick profile with a real SQLite MLflow store on disk."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from bench.processes import free_port, wait_until_ready
from pipeline import paths, tracking
from pipeline.champion import CHAMPION_ALIAS
from pipeline.config import load_config
from pipeline.data import load_splits
from pipeline.evaluate import evaluate_uri, predict_logits
from pipeline.model_card import ModelCard
from pipeline.precision import model_precision
from pipeline.selection import promote
from pipeline.sweep import train
from pipeline.tta import (
    FLIP_ONLY_METRIC,
    ONE_VIEW_METRIC,
    Views,
    base_model,
    flip_averaged,
    is_flip_averaged,
    views_of,
)
from tests.helpers import quick_overrides, tool

pytestmark = pytest.mark.slow
PIPELINE = tool("pipeline")

RUN_ARTIFACTS = {
    "confusion_matrix.png",
    "confusion_matrix.csv",
    "confusion_matrix_normalized.csv",
    "per_class_report.csv",
    "per_class_report.json",
    "training_curves.png",
    "misclassified.png",
    "first_layer_filters.png",
    "feature_maps.png",
    "describe.txt",
    "describe.csv",
    "input_example.json",
}


def use_store(sweep):
    tracking.setup(sweep["config"].tracking)
    return MlflowClient()


def children(client, sweep):
    return client.search_runs(
        [sweep["result"].experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep['result'].parent_run_id}'",
    )


def test_sweep_creates_runs_params_and_per_epoch_metrics(sweep):
    client = use_store(sweep)
    runs = children(client, sweep)
    assert sorted(r.data.tags["model"] for r in runs) == ["lenet", "vgg"]
    for run in runs:
        assert run.info.status == "FINISHED"
        params = run.data.params
        # Each run trains and logs its own recipe: LeNet's per_model epochs, VGG the shared.
        epochs = {"lenet": 3, "vgg": sweep["config"].train.epochs}[run.data.tags["model"]]
        assert params["train.epochs"] == str(epochs)
        assert run.data.metrics["epochs_trained"] == epochs
        assert params["data.dataset"] == "fashion_mnist"
        assert params["data.size.train"] == "1800" and params["data.size.test"] == "500"
        assert int(params["describe.params"]) == int(run.data.metrics["model_params"])
        assert int(params["describe.macs_per_image"]) > 0
        for key in (
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "images_per_s",
        ):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(epochs)), key
        tags = run.data.tags
        assert tags["device"].startswith(("CPU", "GPU"))
        assert tags["version.tensorflow"] == "2.21.0"
        assert len(tags["mlflow.source.git.commit"]) in (40, len("unknown"))


def test_every_run_logs_its_artifacts_and_model(sweep):
    client = use_store(sweep)
    for run in children(client, sweep):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert names >= RUN_ARTIFACTS, RUN_ARTIFACTS - names
        info = mlflow.models.get_model_info(run.data.tags["model_uri"])
        assert info.signature is not None
        assert info.metadata["data_spec"]["input_shape"] == [28, 28, 1]


def test_confusion_matrix_agrees_with_logged_accuracy(sweep, tmp_path):
    client = use_store(sweep)
    for run in children(client, sweep):
        path = client.download_artifacts(run.info.run_id, "confusion_matrix.csv", str(tmp_path))
        matrix = pd.read_csv(path, index_col=0).to_numpy()
        assert matrix.shape == (10, 10)
        assert matrix.sum() == 500  # the test-set size
        accuracy = run.data.metrics["test_accuracy"]
        assert np.trace(matrix) == round(accuracy * 500)
        report = pd.read_csv(
            client.download_artifacts(run.info.run_id, "per_class_report.csv", str(tmp_path))
        )
        assert list(report["support"]) == list(matrix.sum(axis=1))


def test_parent_run_has_the_comparison_table(sweep, tmp_path):
    client = use_store(sweep)
    parent_id = sweep["result"].parent_run_id
    names = {a.path for a in client.list_artifacts(parent_id)}
    assert {"comparison.csv", "comparison.html"} <= names
    table = pd.read_csv(client.download_artifacts(parent_id, "comparison.csv", str(tmp_path)))
    assert sorted(table["model"]) == ["lenet", "vgg"]


def test_champion_is_the_best_validation_run_and_is_registered(sweep):
    client = use_store(sweep)
    runs = children(client, sweep)
    best = max(
        runs, key=lambda r: (r.data.metrics["best_val_accuracy"], -r.data.metrics["model_params"])
    )
    promotion = sweep["promotion"]
    assert promotion.run_id == best.info.run_id
    name = sweep["config"].tracking.registered_model
    version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert str(version.version) == promotion.version
    assert version.run_id == best.info.run_id
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        best.data.metrics["test_accuracy"], abs=1e-4
    )
    # Promoting the same sweep again keeps the same version instead of adding one.
    assert promote(sweep["config"].tracking, sweep["result"].parent_run_id).version == (
        promotion.version
    )
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_an_interrupted_promotion_is_noticed_and_repaired(sweep):
    """A kill between moving the alias and saving to BentoML leaves the registry's champion
    apart from the model `make serve` loads; promotion notices and the next one repairs it.
    (Its own registered model name, so the session's champion stays as it is.)"""
    import dataclasses

    from pipeline.selection import champion_mismatch

    config = dataclasses.replace(sweep["config"].tracking, registered_model="cnn-interrupted")
    parent = sweep["result"].parent_run_id
    client = use_store(sweep)
    first = promote(config, parent)
    assert champion_mismatch(config) is None
    other = next(r for r in sweep["result"].runs if r.run_id != first.run_id)
    uri = client.get_run(other.run_id).data.tags["model_uri"]
    version = mlflow.register_model(uri, "cnn-interrupted").version
    client.set_registered_model_alias("cnn-interrupted", CHAMPION_ALIAS, version)  # then killed
    problem = champion_mismatch(config)
    assert problem and f"v{version} (run {other.run_id})" in problem and "BentoML's" in problem
    repaired = promote(config, parent)
    assert champion_mismatch(config) is None
    assert (repaired.run_id, repaired.version) == (first.run_id, first.version)


def test_promote_finds_the_sweep_of_its_config_and_names_what_it_searched(sweep):
    """`promote --config` looks in that config's experiment for the sweep trained with it; a
    search that finds nothing names the experiment, the store, and where sweeps are."""
    import dataclasses

    from pipeline.config import sweep_key
    from pipeline.errors import PipelineError
    from pipeline.selection import latest_sweep

    client = use_store(sweep)
    config = sweep["config"]
    experiment_id = client.get_experiment_by_name(config.tracking.experiment).experiment_id
    assert latest_sweep(experiment_id, sweep_key(config)) == sweep["result"].parent_run_id

    elsewhere = dataclasses.replace(config.tracking, experiment="cnn-zoo-nothing-here")
    with pytest.raises(PipelineError) as refused:
        promote(elsewhere)
    message = str(refused.value)
    assert "'cnn-zoo-nothing-here'" in message and str(sweep["store"]) in message
    assert f"'{config.tracking.experiment}'" in message  # where the finished sweeps are


def test_progress_line_names_the_model_its_place_the_epoch_and_an_eta():
    import time

    from pipeline.callbacks import ProgressLine, SweepPosition

    line = ProgressLine("vgg", SweepPosition(2, 5, time.perf_counter() - 600), 28, first_epoch=0)
    line._start = time.perf_counter() - 120  # four epochs of 30 s done
    text = line.line(3, {"loss": 0.5, "val_accuracy": 0.9})
    assert text.startswith("[vgg] model 2 of 5, epoch 4/28: loss 0.5000 val_accuracy 0.9000")
    assert "2m00s on this model, 10m00s in the sweep, ETA 12m00s" in text
    assert line.line(27, {}).endswith("done")


def test_evaluate_recomputes_the_logged_metrics(sweep):
    use_store(sweep)
    name = sweep["config"].tracking.registered_model
    result, spec = evaluate_uri(f"models:/{name}@{CHAMPION_ALIAS}")
    run = MlflowClient().get_run(sweep["promotion"].run_id)
    assert result.accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-9)
    assert result.confusion.sum() == 500
    assert spec["class_names"][0] == "T-shirt/top"


def test_bento_model_predicts_like_the_keras_model(sweep, test_images):
    import bentoml
    import keras

    use_store(sweep)
    promotion = sweep["promotion"]
    bento = bentoml.models.get(promotion.bento_tag)
    assert bento.info.labels["run_id"] == promotion.run_id
    assert bento.info.labels["dataset"] == "fashion_mnist"
    card = ModelCard.from_dict(bento.info.metadata)
    assert card.input_shape == (28, 28, 1) and len(card.class_names) == 10
    assert len(card.mean) == 1 and card.test_accuracy == promotion.test_accuracy
    assert card.registry_version == promotion.version and card.run_id == promotion.run_id
    assert card.precision == "float32" and card.architecture == promotion.model
    served = keras.saving.load_model(bento.path_of("model.keras"), safe_mode=True)
    model_uri = MlflowClient().get_run(promotion.run_id).data.tags["model_uri"]
    logged = mlflow.keras.load_model(model_uri)
    x = test_images[0].astype(np.float32)
    expected = logged.predict(x, verbose=0)
    np.testing.assert_allclose(served.predict(x, verbose=0), expected, atol=1e-6)


def test_cli_predict_prints_top3(sweep, test_images, tmp_path):
    files = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(test_images[0][i, ..., 0]).save(path)
        files.append(str(path))
    store_uri = sweep["config"].tracking.tracking_uri
    env_config = tmp_path / "c.yaml"
    env_config.write_text(f"tracking: {{tracking_uri: '{store_uri}'}}\n")
    proc = subprocess.run(
        [PIPELINE, "predict", *files, "--config", str(env_config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith(str(tmp_path))]
    assert len(lines) == 2 and all(line.count(",") == 2 for line in lines)


def test_cli_package_puts_a_non_champion_run_in_the_bento_store(sweep, tmp_path):
    import bentoml

    client = use_store(sweep)
    other = next(r for r in children(client, sweep) if r.info.run_id != sweep["promotion"].run_id)
    config = tmp_path / "c.yaml"
    config.write_text(f"tracking: {{tracking_uri: '{sweep['config'].tracking.tracking_uri}'}}\n")
    package = [PIPELINE, "package", "--name", "cnn-challenger", "--config", str(config)]
    proc = subprocess.run(
        [*package, other.info.run_id], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    card = ModelCard.from_dict(
        bentoml.models.get(proc.stdout.strip().splitlines()[-1]).info.metadata
    )
    assert card.run_id == other.info.run_id
    assert card.architecture == other.data.tags["model"]
    assert card.registry_version == ""
    name = sweep["config"].tracking.registered_model
    champion = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert champion.run_id == sweep["promotion"].run_id  # the registry is untouched

    sweep_id = sweep["result"].parent_run_id
    refused = subprocess.run([*package, sweep_id], capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("not a sweep")


def test_same_seed_gives_the_same_first_epoch(tmp_path):
    def first_epoch(store):
        config = load_config(
            paths.CONFIG_DIR / "quick.yaml",
            quick_overrides(
                store,
                "models=[lenet]",
                "train.epochs=1",
                "data.train_limit=1000",
                "tracking.promote=false",
            ),
        )
        result = train(config)
        run_id = result.runs[0].run_id
        return {k: tracking.metric_history(run_id, k)[0] for k in ("loss", "val_loss", "accuracy")}

    assert first_epoch(tmp_path / "a") == first_epoch(tmp_path / "b")


def _quick_lenet_args(tmp_path, epochs: int) -> list[str]:
    return [
        PIPELINE,
        "train",
        "--config",
        str(paths.CONFIG_DIR / "quick.yaml"),
        *quick_overrides(
            tmp_path,
            "models=[lenet]",
            f"train.epochs={epochs}",
            "data.train_limit=12000",
            "tracking.promote=false",
        ),
    ]


def _kill_after_first_epoch(args: list[str], tmp_path, epochs: int) -> int:
    """Start `args`, SIGKILL it once an epoch is checkpointed; the epochs it had done."""
    log = open(tmp_path / "first.log", "w")  # noqa: SIM115
    first = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    done_epochs = 0
    while time.time() < deadline and first.poll() is None:
        for meta in (tmp_path / "checkpoints").glob("*/backup/training_metadata.json"):
            try:
                done_epochs = json.loads(meta.read_text())["epoch"]
            except (ValueError, OSError):
                continue
        if done_epochs >= 1:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    log.close()
    assert 1 <= done_epochs < epochs, (tmp_path / "first.log").read_text()[-2000:]
    return done_epochs


def _runs(tmp_path) -> tuple[MlflowClient, list]:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    experiment = client.get_experiment_by_name("cnn-zoo-quick")
    return client, client.search_runs([experiment.experiment_id])


def _checkpoint_files(tmp_path) -> list:
    return [p for p in (tmp_path / "checkpoints").glob("*") if p.name != "locks"]


def test_killed_training_resumes_and_logs_each_epoch_once(tmp_path):
    epochs = 5
    args = _quick_lenet_args(tmp_path, epochs)
    _kill_after_first_epoch(args, tmp_path, epochs)

    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resuming run" in second.stdout
    # Quiet and informative: no E- or W-level native lines on this CPU machine
    # (pipeline/quiet.py), and a progress line per epoch.
    native = [line for line in second.stderr.splitlines() if re.match(r"[EW]\d{4} ", line)]
    assert not native, native
    assert re.search(r"\[lenet\] model 1 of 1, epoch \d/5: .*(ETA|done)", second.stdout)

    client, runs = _runs(tmp_path)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    models = [r for r in runs if r.data.tags.get("model") == "lenet"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(models) == 1 and models[0].info.status == "FINISHED"
    assert int(models[0].data.tags["resumed_from_epoch"]) >= 1
    for key in ("loss", "val_loss", "val_accuracy"):
        steps = [m.step for m in client.get_metric_history(models[0].info.run_id, key)]
        assert sorted(steps) == list(range(epochs)), (key, steps)
    assert not _checkpoint_files(tmp_path)  # cleaned up once finished


@pytest.mark.parametrize("damaged", ["backup/training_metadata.json", "best.weights.h5"])
def test_a_corrupt_checkpoint_trains_that_model_again_with_a_warning(tmp_path, damaged):
    """A checkpoint file cut short (a full disk, a copy interrupted): the run it belonged to
    is marked abandoned, and the model trains again from its first epoch in a new run."""
    epochs = 3
    args = _quick_lenet_args(tmp_path, epochs)
    _kill_after_first_epoch(args, tmp_path, epochs)
    (path,) = (tmp_path / "checkpoints").glob(f"*/{damaged}")
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])

    second = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "warning: cannot resume run" in second.stderr
    assert f"{damaged.split('/')[-1]} is unreadable" in second.stderr
    client, runs = _runs(tmp_path)
    lenet = [r for r in runs if r.data.tags.get("model") == "lenet"]
    abandoned = [r for r in lenet if "abandoned" in r.data.tags]
    finished = [r for r in lenet if r.info.status == "FINISHED"]
    assert len(abandoned) == 1 and abandoned[0].info.status == "FAILED"
    assert len(finished) == 1 and "resumed_from_epoch" not in finished[0].data.tags
    steps = [m.step for m in client.get_metric_history(finished[0].info.run_id, "val_loss")]
    assert steps == list(range(epochs))
    assert not _checkpoint_files(tmp_path)


def test_a_second_train_of_the_same_sweep_on_the_same_store_stops_in_one_line(tmp_path):
    """While one process holds the sweep (here: this test, through the same lock), another
    `pipeline train` of the same configuration on the same store must not join its runs."""
    from pipeline.config import sweep_key
    from pipeline.sweep_lock import sweep_lock

    args = _quick_lenet_args(tmp_path, 1)
    config = load_config(paths.CONFIG_DIR / "quick.yaml", args[4:])
    uri = tracking.tracking_uri(config.tracking)
    with sweep_lock(tmp_path / "checkpoints" / "locks", uri, sweep_key(config)):
        busy = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert busy.returncode == 2, busy.stderr[-2000:]
    lines = busy.stderr.strip().splitlines()
    assert lines[-1].startswith("error: this sweep is already running on this tracking store")
    assert f"pid {os.getpid()}" in lines[-1]
    assert not (tmp_path / "mlflow.db").exists()  # stopped before touching the store


def test_a_tracking_server_works_by_configuration_alone(tmp_path):
    """`mlflow server` on 127.0.0.1 with proxied artifacts: train, log and promote through it."""
    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    server = subprocess.Popen(
        [
            tool("mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination",
            str(artifacts),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_ready(f"{uri}/health", server, timeout_s=180), (
            "mlflow server did not start"
        )
        config = load_config(
            paths.CONFIG_DIR / "quick.yaml",
            [
                f"tracking.tracking_uri={uri}",
                f"tracking.checkpoint_dir={tmp_path}/ckpt",
                "models=[lenet]",
                "train.epochs=1",
                "data.train_limit=500",
                "data.test_limit=100",
            ],
        )
        result = train(config)
        promotion = promote(config.tracking, result.parent_run_id)
        client = MlflowClient(uri)
        run = client.get_run(result.runs[0].run_id)
        assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
        version = client.get_model_version_by_alias("cnn-classifier", CHAMPION_ALIAS)
        assert str(version.version) == promotion.version
        # Artifacts went through the server into its own artifact store, not a local folder.
        assert list(artifacts.rglob("confusion_matrix.png"))
        assert not (tmp_path / "mlartifacts").exists()
    finally:
        import os

        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_embedded_store_keeps_artifacts_beside_its_database(sweep):
    store = sweep["store"]
    assert tracking.local_artifact_root(f"sqlite:///{store}/mlflow.db") == (
        (store / "mlartifacts").as_uri()
    )
    client = use_store(sweep)
    for run in children(client, sweep):
        assert list((store / "mlartifacts").rglob(f"{run.info.run_id}/**/confusion_matrix.png"))


@pytest.mark.parametrize("shift", [0, 1], ids=["flip", "flip-and-shifts"])
def test_mixed_precision_view_averaged_run_logs_and_evaluates_the_model_it_trained(tmp_path, shift):
    config = load_config(
        paths.CONFIG_DIR / "quick.yaml",
        quick_overrides(
            tmp_path,
            "models=[lenet]",
            "train.precision=mixed_bfloat16",
            "augment.test_flip=true",
            f"augment.test_shift={shift}",
            "tracking.promote=false",
        ),
    )
    run_id = train(config).runs[0].run_id
    run = MlflowClient().get_run(run_id)
    assert run.data.params["train.precision"] == "mixed_bfloat16"
    assert run.data.params["train.precision_resolved"] == "mixed_bfloat16"
    assert run.data.metrics["test_accuracy"] > 0.2  # it learned: chance is 0.1

    model_uri = run.data.tags["model_uri"]
    logged = mlflow.keras.load_model(model_uri)
    assert is_flip_averaged(logged) and views_of(logged) == Views(flip=True, shift=shift)
    assert model_precision(logged) == "mixed_bfloat16"
    # The logged model is the one evaluated: mirrored images get the very same answers.
    images = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.float32)
    assert np.allclose(logged(images), logged(images[:, :, ::-1]), atol=1e-5)
    # The network alone, on the same test images, is logged beside it: what the flip adds.
    assert 0.2 < run.data.metrics[ONE_VIEW_METRIC] <= 1.0
    # ... and it is the accuracy of the network inside the logged model, on the run's test images.
    splits = load_splits(config.data, config.train.seed)
    alone = predict_logits(base_model(logged), splits.x_test).argmax(axis=1)
    assert run.data.metrics[ONE_VIEW_METRIC] == pytest.approx(np.mean(alone == splits.y_test))
    # With shifts, the flip alone is measured too, so the table can say what the shifts add.
    if shift:
        flipped = predict_logits(flip_averaged(base_model(logged)), splits.x_test).argmax(axis=1)
        assert run.data.metrics[FLIP_ONLY_METRIC] == pytest.approx(
            np.mean(flipped == splits.y_test)
        )
    else:
        assert FLIP_ONLY_METRIC not in run.data.metrics
    # Loaded again, the model computes in bf16 as it did when the run was evaluated.
    result, _ = evaluate_uri(model_uri)
    assert result.accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-9)


@pytest.mark.parametrize(
    ("examples", "batch", "replicas", "expected"),
    [
        (103, 512, 2, (102, 102)),  # one batch of 103 would split 52 and 51
        (6000, 512, 2, (6000, 512)),
        (6000, 512, 3, (6000, 510)),
        (5, 512, 4, (4, 4)),
        (103, 512, 1, (103, 512)),
    ],
)
def test_evaluation_batches_split_evenly_across_replicas(examples, batch, replicas, expected):
    from pipeline.distribution import even_split

    kept, size = even_split(examples, batch, replicas)
    assert (kept, size) == expected
    assert kept % replicas == 0 and size % replicas == 0 and kept >= examples - replicas + 1


def test_mirrored_strategy_trains_on_two_logical_cpu_devices(tmp_path):
    """`train.distribution=mirrored` on a machine without a GPU: the CPU split into 2 logical
    devices; sizes chosen so that the last training batch and the validation set are odd."""
    args = [
        PIPELINE, "train", "--config", str(paths.CONFIG_DIR / "quick.yaml"),
        *quick_overrides(
            tmp_path, "models=[lenet]", "train.epochs=2", "data.train_limit=1024",
            "train.distribution=mirrored", "tracking.promote=false",
        ),
    ]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = _runs(tmp_path)
    (run,) = [r for r in runs if r.data.tags.get("model") == "lenet"]
    assert run.info.status == "FINISHED"
    assert run.data.params["train.replicas"] == "2"
    assert run.data.params["data.size.val"] == "103"  # 102 of them validate, split 51 and 51
    assert "test_accuracy" in run.data.metrics
    uneven = subprocess.run(
        [*args, "train.batch_size=127"], capture_output=True, text=True, timeout=600
    )
    assert uneven.returncode != 0
    assert "must be a multiple of the 2 replicas" in uneven.stderr
