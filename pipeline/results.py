"""`pipeline results` (`make results`): docs/RESULTS.md from the MLflow runs, beside the
published accuracies.

Only runs trained on the whole training set and evaluated on the whole test set count. Per
architecture the run shown is the one the champion rule would pick (best validation accuracy,
then fewer parameters).
"""

from __future__ import annotations

import datetime
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from pipeline import paths, tracking
from pipeline.champion import CHAMPION_ALIAS, rank_runs
from pipeline.config import AugmentConfig, TrackingConfig
from pipeline.errors import PipelineError
from pipeline.model_card import CONFUSION_MATRIX_FILE
from pipeline.tta import FLIP_ONLY_METRIC, ONE_VIEW_METRIC, Views

#: Fashion-MNIST test accuracy published for the same architectures, and the project's target
#: for each (issue 12: the zoo profile on a 2-core CPU).
PUBLISHED = {
    "lenet": ("0.779 (D2L)", 0.915),
    "alexnet": ("0.883 (D2L)", 0.930),
    "vgg": ("0.920 (D2L); VGG16 0.935 (FMNIST benchmark)", 0.940),
    "nin": ("0.772 (D2L)", 0.925),
    "googlenet": ("0.886 (D2L); 0.937 (FMNIST benchmark)", 0.935),
    # The stretch: a residual network that lifts the champion to 0.950.
    "resnet": ("ResNet-18 0.949 (FMNIST benchmark)", 0.950),
}
CHAMPION_TARGET = 0.945
#: The GPU profile's targets (configs/gpu.yaml on one H100 or H200, issue 34), and the
#: experiment its sweep logs to.
GPU_TARGETS = {
    "lenet": 0.925,
    "alexnet": 0.940,
    "vgg": 0.945,
    "nin": 0.945,
    "googlenet": 0.945,
    "resnet": 0.955,
}
GPU_EXPERIMENT = "cnn-zoo-gpu"


def full_data_runs(experiment_id: str) -> pd.DataFrame:
    """Finished model runs on all of Fashion-MNIST (no train or test limit)."""
    runs = mlflow_runs(experiment_id)
    if runs.empty:
        return runs
    full = (
        runs["tags.model"].notna()
        & (runs["status"] == "FINISHED")
        & (runs["params.data.dataset"] == "fashion_mnist")
        & (runs["params.data.train_limit"].isin(["None", None]))
        & (runs["params.data.test_limit"].isin(["None", None]))
    )
    return runs[full]


def mlflow_runs(experiment_id: str) -> pd.DataFrame:
    import mlflow

    return mlflow.search_runs([experiment_id], max_results=5000)


def precision_of(runs: pd.DataFrame) -> pd.Series:
    """Each run's resolved dtype policy; runs from before `train.precision` were float32."""
    column = "params.train.precision_resolved"
    if column not in runs:
        return pd.Series("float32", index=runs.index)
    return runs[column].fillna("float32")


def best_per_model(runs: pd.DataFrame) -> pd.DataFrame:
    """Per architecture, the run the champion rule ranks first."""
    return rank_runs(runs).groupby("tags.model", sort=False).head(1)


def _param(run: pd.Series, key: str, model: str | None = None):
    """A run's config value, the model's own option first (`model_options.<model>.<key>`)."""
    if model is not None:
        own = run.get(f"params.model_options.{model}.{key.split('.')[-1]}")
        if isinstance(own, str):
            return own
    value = run.get(f"params.{key}")
    return value if isinstance(value, str) else None


def recipe(run: pd.Series) -> str:
    """The training recipe of a run, from its logged configuration."""
    model = run["tags.model"]
    parts = [f"width {_param(run, 'model.width', model)}"]
    if _param(run, "model.batch_norm", model) == "True":
        parts.append("BN")
    parts.append(f"dropout {_param(run, 'model.dropout', model)}")
    if _param(run, "augment.enabled") == "True":
        flags = ["flip"] if _param(run, "augment.flip") == "True" else []
        for key in AugmentConfig.FACTORS:
            value = _param(run, f"augment.{key}")
            if value not in (None, "0.0", "0"):
                flags.append(f"{key} {value}")
        parts.append("+".join(flags))
    flip = _param(run, "augment.test_flip") == "True"
    shift = _param(run, "augment.test_shift") not in (None, "0")
    if flip or shift:
        views = ["flip"] if flip else []
        if shift:
            pixels = _param(run, "augment.test_shift")
            views.append(f"shifts {pixels} px ({Views(flip, int(pixels)).count} views)")
        parts.append("test-time " + " + ".join(views))
    smoothing = _param(run, "train.label_smoothing")
    if smoothing not in (None, "0.0"):
        parts.append(f"label smoothing {smoothing}")
    schedule = _param(run, "train.schedule")
    warmup = _param(run, "train.warmup_epochs")
    parts.append(
        f"{_param(run, 'train.optimizer')} lr {_param(run, 'train.learning_rate')}"
        f" wd {_param(run, 'train.weight_decay')} batch {_param(run, 'train.batch_size')},"
        f" {schedule}" + (f" with {warmup}-epoch warm-up" if warmup not in (None, "0") else "")
    )
    return ", ".join(parts)


def sweep_sections(runs: pd.DataFrame) -> str:
    """Every finished sweep on all the data, newest first, each model of it beside its target,
    with the sweep's wall time from its start to its end: what one `make train` gave."""
    client = tracking.client()
    parents = [client.get_run(p) for p in runs["tags.mlflow.parentRunId"].dropna().unique()]
    finished = [p for p in parents if p.info.status == "FINISHED" and p.info.end_time]
    sections = []
    for parent in sorted(finished, key=lambda p: p.info.start_time, reverse=True):
        rows = runs[runs["tags.mlflow.parentRunId"] == parent.info.run_id]
        order = [m for m in PUBLISHED if m in set(rows["tags.model"])]
        rows = rows.set_index("tags.model").loc[order]
        targets = pd.Series({m: PUBLISHED[m][1] for m in order})
        accuracy = rows["metrics.test_accuracy"]
        frame = pd.DataFrame(
            {
                "test accuracy": accuracy.round(4),
                "one view": [_fewer_views(run) for _, run in rows.iterrows()],
                "flip only": [_fewer_views(run, FLIP_ONLY_METRIC) for _, run in rows.iterrows()],
                "target": targets,
                "meets target": (accuracy >= targets).map({True: "yes", False: "no"}),
                "epochs": rows["metrics.epochs_trained"].astype(int),
                "fit time (min)": (rows["metrics.train_wall_seconds"] / 60).round(1),
            }
        ).rename_axis("model")
        if not any(frame["flip only"] != ""):
            frame = frame.drop(columns="flip only")
        started = datetime.datetime.fromtimestamp(parent.info.start_time / 1000, datetime.UTC)
        minutes = (parent.info.end_time - parent.info.start_time) / 60000
        sections.append(
            f"### Sweep `{parent.info.run_name}`, started {started:%Y-%m-%d %H:%M} UTC\n\n"
            f"Run `{parent.info.run_id}`: **{minutes:.1f} minutes** from its start to its end"
            " (data loading, training, evaluation and logging included);"
            f" {int((frame['meets target'] == 'yes').sum())} of {len(frame)} models meet"
            f" their targets.\n\n{frame.to_markdown()}\n"
        )
    return "\n".join(sections)


def _fewer_views(run: pd.Series, metric: str = ONE_VIEW_METRIC) -> float | str:
    """A view-averaged run's test accuracy with fewer views; "" for a run without them."""
    value = run.get(f"metrics.{metric}")
    return "" if value is None or pd.isna(value) else round(float(value), 4)


def table(best: pd.DataFrame, targets: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per model run in `best`, beside `targets` (default: the zoo's, `PUBLISHED`)."""
    rows = []
    precisions = precision_of(best)
    for index, run in best.iterrows():
        model = run["tags.model"]
        published, target = PUBLISHED.get(model, ("", float("nan")))
        if targets is not None:
            target = targets.get(model, float("nan"))
        backend = run.get("tags.backend")  # runs from before the tag trained on TensorFlow
        accuracy = run["metrics.test_accuracy"]
        rows.append(
            {
                "model": model,
                "test accuracy": round(accuracy, 4),
                "one view": _fewer_views(run),
                "macro F1": round(run["metrics.test_macro_f1"], 4),
                "parameters": int(run["metrics.model_params"]),
                "MACs/image": int(run["params.describe.macs_per_image"]),
                "epochs": int(run["metrics.epochs_trained"]),
                "wall time (s)": round(run["metrics.train_wall_seconds"]),
                "device": run["tags.device"],
                "backend": backend if isinstance(backend, str) else "tensorflow",
                "precision": precisions[index],
                "recipe": recipe(run),
                "published": published,
                "target": target,
                "meets target": "yes" if accuracy >= target else "no",
                "run": run["run_id"],
            }
        )
    return pd.DataFrame(rows)


def unpacked_store(runs: Path, into: Path) -> Path:
    """The `mlruns/` file store of the GPU proof's `gpu-runs.tar.gz` (bench/gpu/check.py),
    given the tarball or the folder it was unpacked in."""
    import tarfile

    if runs.is_file():
        with tarfile.open(runs) as tar:
            tar.extractall(into, filter="data")
        runs = into
    store = runs / "mlruns"
    if not store.is_dir():
        raise PipelineError(
            f"{runs}: no mlruns/ folder in it; give --gpu-runs the device proof's "
            "gpu-runs.tar.gz or the folder it was unpacked in"
        )
    return store


def gpu_section(runs: Path, experiment: str = GPU_EXPERIMENT) -> str:
    """The GPU proof's models beside the GPU targets, from its runs (`unpacked_store`)."""
    import os

    import mlflow

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"file:{unpacked_store(runs, Path(tmp))}")
        try:
            found = mlflow.get_experiment_by_name(experiment)
            frame = full_data_runs(found.experiment_id) if found else pd.DataFrame()
        finally:
            mlflow.set_tracking_uri(previous)
    if frame.empty:
        raise PipelineError(f"{runs}: no finished runs on all of Fashion-MNIST in '{experiment}'")
    rows = table(best_per_model(frame), GPU_TARGETS)
    columns = ["model", "test accuracy", "one view", "target", "meets target", "epochs"]
    columns += ["wall time (s)", "device", "backend", "precision", "run"]
    return rows[columns].to_markdown(index=False)


def write_results(
    config: TrackingConfig, docs: Path = paths.DOCS_DIR, gpu_runs: Path | None = None
) -> Path:
    """Write `docs/RESULTS.md` and the champion's confusion matrix beside it; returns the path.
    With `gpu_runs` (the GPU proof's, `unpacked_store`), its models get a section too."""
    import mlflow

    experiment_id = tracking.setup(config)
    runs = full_data_runs(experiment_id)
    if runs.empty:
        raise PipelineError(
            f"no runs on all of Fashion-MNIST in experiment '{config.experiment}' yet: "
            "run `make train PROFILE=zoo` first"
        )
    results = table(best_per_model(runs))

    client = tracking.client()
    champion = client.get_model_version_by_alias(config.registered_model, CHAMPION_ALIAS)
    champion_run = client.get_run(champion.run_id)
    docs.mkdir(exist_ok=True)
    image = docs / "champion_confusion_matrix.png"
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id, artifact_path=CONFUSION_MATRIX_FILE, dst_path=tmp
        )
        shutil.copy(downloaded, image)
    champion_accuracy = champion_run.data.metrics["test_accuracy"]
    verdict = "meets" if champion_accuracy >= CHAMPION_TARGET else "does not meet"
    gpu_text = (
        "The GPU profile (`configs/gpu.yaml`, Keras on JAX) as the device proof trained it "
        "(`bench/gpu/check.sh`), beside the GPU targets:\n\n" + gpu_section(gpu_runs)
        if gpu_runs is not None
        else "Not run yet: no GPU has been lent to this project's sessions so far. "
        "`bench/gpu/check.sh` is the proof; `make results GPU_RUNS=...` puts its runs here."
    )
    text = f"""# Results on the Fashion-MNIST test set

Generated by `make results` from the MLflow runs on {datetime.date.today().isoformat()}; do not
edit by hand. Per architecture, the run the champion rule would pick among runs trained on all
54,000 training images and evaluated on all 10,000 test images. "published" is the accuracy
reported for the same architecture in Dive into Deep Learning and in the Fashion-MNIST
benchmark table; "target" is what this project aims for on a 2-core CPU with the `zoo`
profile (`make train PROFILE=zoo`). "wall time" is the model's training loop (`fit`); the
sweeps' whole times are below. "recipe" is read from each run's logged configuration; with
"test-time flip", the evaluated, registered and served model averages its logits for each image
and its mirror image (`augment.test_flip`), so it costs twice the MACs/image shown, which are
one pass of the trained network; with "shifts", each of those views is also averaged moved
that many pixels up, down, left and right (`augment.test_shift`), 10 passes in all, and the
sweeps' tables below give such a run's accuracy with the flip alone ("flip only"). "one view"
is the same run's network evaluated on the test images alone: what the views add.

{results.to_markdown(index=False)}

Champion: **{champion_run.data.tags["model"]}**, `{config.registered_model}` version
{champion.version}, run `{champion.run_id}`, test accuracy {champion_accuracy:.4f}
({verdict} the champion target of {CHAMPION_TARGET}).

![confusion matrix of the champion](champion_confusion_matrix.png)

## On one GPU: the device proof

{gpu_text}

## Every sweep on all the data, model by model

{sweep_sections(runs)}"""
    out = docs / "RESULTS.md"
    out.write_text(text)
    return out
