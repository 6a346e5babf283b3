"""`pipeline monitor`: the service's log against the served model's reference profile, as a
report and an MLflow run, with a verdict cron or CI can act on (the command's exit status).

Reads the log (pipeline/monitor_log.py), compares (pipeline/drift.py), writes the report
(pipeline/drift_report.py) and logs it as one run of `monitor.experiment`: the drift figures
are that run's metrics, so the MLflow UI charts them run after run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.config import Config
from pipeline.drift import Drift, compare, latency_quantiles
from pipeline.drift_report import write_files
from pipeline.errors import PipelineError
from pipeline.features import default_log_path
from pipeline.model_card import REFERENCE_FILE
from pipeline.monitor_log import parse_since, read_log
from pipeline.reference import ReferenceError, ReferenceProfile


@dataclass(frozen=True)
class MonitorResult:
    drift: Drift
    model_tag: str
    report: Path
    run_id: str


def served_model(config: Config):
    """The BentoML model whose records are compared: `monitor.model`, else the newest
    `tracking.registered_model`, as the service loads it by default."""
    import bentoml

    tag = config.monitor.model or f"{config.tracking.registered_model}:latest"
    try:
        return bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, ValueError) as exc:
        raise PipelineError(
            f"no BentoML model {tag} in this BentoML home ({exc}); promote one with "
            "`pipeline promote`, or set monitor.model to the tag the service serves"
        ) from None


def reference_of(model) -> ReferenceProfile:
    path = Path(model.path_of(REFERENCE_FILE))
    if not path.is_file():
        raise PipelineError(
            f"{model.tag} was packaged without a reference profile (trained before monitoring "
            "existed?): train and promote again, or `pipeline package` a run that has one"
        )
    try:
        return ReferenceProfile.load(path)
    except ReferenceError as exc:
        raise PipelineError(str(exc)) from None


def metrics_of(drift: Drift, records) -> dict[str, float]:
    """The run's metrics: every drift figure, the verdict (1: drifted) and the window's
    confidence, input facts and latency."""
    metrics: dict[str, float] = {}
    for row in drift.features.to_dict(orient="records"):
        for key in ("psi", "ks", "ks_p"):
            metrics[f"{key}.{row['feature']}"] = row[key]
    latency = latency_quantiles(records)
    return {
        **metrics,
        "label_chi2": drift.labels.chi2,
        "label_p_value": drift.labels.p_value,
        "label_psi": drift.labels.psi,
        "drift": float(drift.drifted),
        "drifted_features": float(len(drift.drifted_names())),
        "images": float(drift.images),
        "requests": float(drift.requests),
        "mean_confidence": float(records["confidence"].mean()),
        "resized_fraction": float(records["resized"].astype(bool).mean()),
        "converted_fraction": float(records["converted"].astype(bool).mean()),
        "latency_p50_ms": latency[0.5],
        "latency_p95_ms": latency[0.95],
    }


def monitor(config: Config, since: str | None = None, skip_bad_lines: bool = False):
    """Compare the log's records of the served model since `since` with its reference."""
    settings = config.monitor
    window_start = parse_since(since)
    logs = Path(settings.logs) if settings.logs else default_log_path()
    model = served_model(config)
    tag = str(model.tag)
    profile = reference_of(model)
    served = read_log(logs, tag, window_start, skip_bad_lines)
    records = served.records
    if len(records) < settings.min_images:
        raise PipelineError(
            f"only {len(records)} images of {tag} in this window, fewer than "
            f"monitor.min_images={settings.min_images}: choose an earlier --since, or wait"
        )
    drift = compare(records, profile, settings)
    first, last = records["answered"].min(), records["answered"].max()
    context = {
        "model_tag": tag,
        "model_run_id": model.info.metadata.get("run_id", ""),
        "since": since or "the whole log",
        "first_record": f"{first:%Y-%m-%d %H:%M:%S}",
        "last_record": f"{last:%Y-%m-%d %H:%M:%S}",
        "logs": str(logs),
        "bad_lines_skipped": served.bad_lines,
        "other_models_left_out": served.other_models or "none",
    }
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = (Path(settings.report_dir) if settings.report_dir else logs / "reports") / (
        f"drift-{stamp}"
    )
    files = write_files(folder, drift, records, profile, context)
    experiment_id = tracking.setup(
        dataclasses.replace(config.tracking, experiment=settings.experiment)
    )
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"drift {tag}") as run:
        mlflow.set_tags({"model_tag": tag, "drift": str(drift.drifted).lower()})
        mlflow.log_params(
            {
                "since": context["since"],
                "first_record": context["first_record"],
                "last_record": context["last_record"],
                "logs": str(logs),
                "psi_threshold": settings.psi_threshold,
                "label_p_value": settings.label_p_value,
                "bad_lines_skipped": served.bad_lines,
                "model_run_id": context["model_run_id"],
            }
        )
        # Stamped with the window's last record, so that the MLflow UI's charts against wall
        # time place each run where its window ended.
        stamp_ms = int(last.to_pydatetime().astimezone().timestamp() * 1000)
        mlflow.log_metrics(metrics_of(drift, records), step=0, timestamp=stamp_ms)
        mlflow.log_artifacts(str(folder))
    return MonitorResult(drift, tag, files["report"], run.info.run_id)
