"""Tracking on a real PostgreSQL: Debian's server in a temporary directory, `mlflow server` on it
with proxied artifacts, and two `pipeline train` processes at once, configured by URI alone."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bench.processes import free_port, wait_until_ready
from pipeline import paths
from pipeline.champion import ORDER_BY
from pipeline.config import TrackingConfig
from pipeline.selection import promote
from tests.helpers import tool

pytestmark = pytest.mark.slow
PIPELINE = tool("pipeline")
MLFLOW = tool("mlflow")


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        reason = "needs Debian's postgresql (apt-get install postgresql)"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return Path(found[-1]).parent


def _as_server_user(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the `postgres` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 in a temporary directory; yields its `mlflow` database's
    URI, and stops and removes it afterwards."""
    bin_dir = _postgres_bin()
    home = Path(tempfile.mkdtemp(prefix="cnn-zoo-pg-", dir="/tmp"))
    home.chmod(0o755)
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "cnn"]),
        check=True,
        capture_output=True,
    )
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "server.log")]
    options = f"-h 127.0.0.1 -p {port} -k {data}"
    subprocess.run(_as_server_user([*start, "-o", options, "start"]), check=True)
    try:
        import psycopg

        dsn = f"host=127.0.0.1 port={port} user=cnn dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://cnn@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(_as_server_user([*start, "-m", "fast", "stop"]), check=False)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """`mlflow server` backed by that database, serving artifacts from its own folder."""
    artifacts = tmp_path_factory.mktemp("pg-artifacts")
    port = free_port()
    server = subprocess.Popen(
        [
            MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", postgres, "--artifacts-destination", str(artifacts),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        assert wait_until_ready(f"{uri}/health", server, timeout_s=240), "mlflow did not start"
        yield uri, artifacts
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_two_trainers_at_once_on_postgresql_get_their_own_runs_and_the_right_champions(
    mlflow_server, tmp_path
):
    uri, artifacts = mlflow_server
    experiment = "cnn-zoo-postgres"

    def trainer(name: str, model: str, seed: int) -> subprocess.Popen:
        args = [
            PIPELINE, "train", "--config", str(paths.CONFIG_DIR / "quick.yaml"),
            f"models=[{model}]", f"train.seed={seed}", "train.epochs=1",
            "data.train_limit=800", "data.test_limit=200",
            f"tracking.tracking_uri={uri}", f"tracking.experiment={experiment}",
            f"tracking.checkpoint_dir={tmp_path / name}", "tracking.promote=false",
        ]  # fmt: skip
        log = (tmp_path / f"{name}.log").open("w")
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    started = time.time()
    first, second = trainer("a", "lenet", 1), trainer("b", "lenet,vgg", 2)
    for proc, name in ((first, "a"), (second, "b")):
        assert proc.wait(timeout=600) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]

    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("sweep") == "true"]
    assert len(sweeps) == 2 and all(s.info.start_time / 1000 >= started - 5 for s in sweeps)
    children = {
        s.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == s.info.run_id]
        for s in sweeps
    }
    assert sorted(len(c) for c in children.values()) == [1, 2]  # each its own runs, none shared
    assert all(r.info.status == "FINISHED" for c in children.values() for r in c)

    config = TrackingConfig(tracking_uri=uri, experiment=experiment, registered_model="cnn-pg")
    for sweep_id, models in children.items():
        expected = client.search_runs(
            [experiment_id],
            f"tags.mlflow.parentRunId = '{sweep_id}'",
            order_by=ORDER_BY,
            max_results=1,
        )[0]
        best = max(
            models,
            key=lambda r: (r.data.metrics["best_val_accuracy"], -r.data.metrics["model_params"]),
        )
        assert expected.info.run_id == best.info.run_id
        assert promote(config, sweep_id).run_id == best.info.run_id
    # Artifacts went through the server into its folder; the database holds the runs.
    assert len(list(artifacts.rglob("confusion_matrix.png"))) == 3
