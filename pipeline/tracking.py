"""MLflow set-up: which store, which experiment, and small helpers over the client."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from pipeline import paths
from pipeline.config import TrackingConfig
from pipeline.errors import PipelineError


def tracking_uri(config: TrackingConfig) -> str:
    """The config's URI, else $MLFLOW_TRACKING_URI, else the embedded SQLite file."""
    return (
        config.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or (f"sqlite:///{paths.MLFLOW_DB}")
    )


def local_artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its file, not in the current directory.

    `sqlite:///rel.db` is relative and `sqlite:////abs/path.db` absolute; the path is taken
    literally (a URL parser would read the first folder of an absolute path as a host name).
    """
    if not uri.startswith("sqlite:///"):
        return None  # a tracking server decides where artifacts go
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


def setup(config: TrackingConfig) -> str:
    """Point MLflow at the store and return the experiment id (creating it if needed)."""
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(config.experiment)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return mlflow.create_experiment(
            config.experiment, artifact_location=local_artifact_root(uri)
        )
    except mlflow.exceptions.MlflowException as exc:
        # Two trainers starting at once on a shared server: the other one created it first.
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(config.experiment).experiment_id


def client() -> MlflowClient:
    return MlflowClient()


def metric_history(run_id: str, key: str) -> list[float]:
    """Values of a metric ordered by step (one per epoch)."""
    history = client().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def logged_metadata(model_uri: str) -> dict:
    """The data spec and data config this pipeline records with every logged model."""
    metadata = mlflow.models.get_model_info(model_uri).metadata or {}
    if not {"data_spec", "data_config"} <= metadata.keys():
        raise PipelineError(f"{model_uri} was not logged by this pipeline (no data spec)")
    return metadata
