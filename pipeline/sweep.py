"""A sweep: one parent MLflow run, one nested run per model, each resumable after a kill.

`train(config)` is the pure entry point the CLI and the tests call. A restarted sweep with the
same configuration finds its unfinished parent run, skips finished models and resumes the
unfinished one from its last epoch checkpoint (pipeline/tracked_run.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd

from pipeline import paths, tracking
from pipeline.backend import make_deterministic
from pipeline.callbacks import SweepPosition
from pipeline.config import Config, sweep_key
from pipeline.data import load_splits
from pipeline.sweep_lock import sweep_lock
from pipeline.tracked_run import ABANDONED_TAG, RunResult, result_from_run, train_model


@dataclass(frozen=True)
class SweepResult:
    parent_run_id: str
    experiment_id: str
    runs: tuple[RunResult, ...]

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.__dict__ for r in self.runs])


def _unfinished(runs: list, key: str, value: str):
    """The newest run whose tag `key` equals `value`, that did not finish and that was not
    abandoned."""
    for run in runs:  # search order: newest first
        tags = run.data.tags
        if tags.get(key) == value and run.info.status != "FINISHED" and ABANDONED_TAG not in tags:
            return run
    return None


def train(config: Config) -> SweepResult:
    """Train every model of the sweep, tracked in MLflow; resume an interrupted identical sweep.

    One process at a time per store and configuration (pipeline/sweep_lock.py).
    """
    key = sweep_key(config)
    locks = Path(config.tracking.checkpoint_dir or paths.CHECKPOINT_DIR) / "locks"
    with sweep_lock(locks, tracking.tracking_uri(config.tracking), key):
        return _train_locked(config, key)


def _train_locked(config: Config, key: str) -> SweepResult:
    if config.train.deterministic:
        make_deterministic()
    splits = load_splits(config.data, config.train.seed)
    experiment_id = tracking.setup(config.tracking)
    client = tracking.client()
    parents = client.search_runs(
        [experiment_id], filter_string=f"tags.sweep_key = '{key}'", order_by=["start_time DESC"]
    )
    parent = _unfinished(
        [r for r in parents if "mlflow.parentRunId" not in r.data.tags], "sweep_key", key
    )
    results: list[RunResult] = []
    with mlflow.start_run(
        run_id=parent.info.run_id if parent else None,
        experiment_id=experiment_id,
        run_name=None if parent else f"sweep-{'-'.join(config.models)}",
    ) as parent_run:
        parent_id = parent_run.info.run_id
        if parent is None:
            mlflow.set_tags({"sweep_key": key, "sweep": "true", "dataset": splits.spec.name})
            mlflow.log_params(config.flat())
        children = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
            order_by=["start_time DESC"],
        )
        started = time.perf_counter()
        for index, name in enumerate(config.models, start=1):
            position = SweepPosition(index, len(config.models), started)
            done = [
                c
                for c in children
                if c.data.tags.get("model") == name and c.info.status == "FINISHED"
            ]
            if done:
                print(f"[{name}] already finished in run {done[0].info.run_id}; skipping")
                results.append(result_from_run(done[0]))
                continue
            unfinished = _unfinished(children, "model", name)
            results.append(
                train_model(
                    name,
                    config,
                    splits,
                    parent_id,
                    experiment_id,
                    resume_run_id=unfinished.info.run_id if unfinished else None,
                    position=position,
                )
            )
        sweep = SweepResult(parent_id, experiment_id, tuple(results))
        table = sweep.table()
        mlflow.log_text(table.to_csv(index=False), "comparison.csv")
        mlflow.log_text(table.to_html(index=False), "comparison.html")
    return sweep
