"""Champion selection and packaging: the registry alias and the BentoML model store.

The rule (pipeline/champion.py): among the finished runs of a sweep, the highest best-epoch
validation accuracy wins; ties go to the model with fewer parameters. The test set plays no
part in the choice.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow

from pipeline import tracking
from pipeline.champion import CHAMPION_ALIAS, ORDER_BY
from pipeline.config import TrackingConfig, redact_uri
from pipeline.errors import PipelineError
from pipeline.model_card import SHIPPED_ARTIFACTS, ModelCard, ModelCardError
from pipeline.models.layers import NORMALISATION
from pipeline.precision import model_precision
from pipeline.tta import FLIP_ONLY_METRIC, ONE_VIEW_METRIC, is_flip_averaged, views_of


@dataclass(frozen=True)
class Promotion:
    run_id: str
    model: str
    version: str
    bento_tag: str
    best_val_accuracy: float
    test_accuracy: float


FINISHED_SWEEPS = "tags.sweep = 'true' and attributes.status = 'FINISHED'"


def latest_sweep(experiment_id: str, key: str | None = None) -> str:
    """The newest finished sweep (parent run) of the experiment: of the configuration whose
    `sweep_key` is `key` when there is one, else of any configuration (said on stderr)."""
    client = tracking.client()

    def newest(filter_string: str) -> str | None:
        runs = client.search_runs(
            [experiment_id], filter_string, order_by=["start_time DESC"], max_results=1
        )
        return runs[0].info.run_id if runs else None

    if key is not None:
        found = newest(f"{FINISHED_SWEEPS} and tags.sweep_key = '{key}'")
        if found:
            return found
    found = newest(FINISHED_SWEEPS)
    experiment = client.get_experiment(experiment_id).name
    if found is None:
        raise PipelineError(_no_sweep_message(experiment))
    if key is not None:
        print(
            f"no finished sweep of exactly this configuration in experiment '{experiment}'; "
            f"promoting its newest sweep, run {found}",
            file=sys.stderr,
        )
    return found


def _no_sweep_message(experiment: str) -> str:
    """Which experiment and store were searched, and where finished sweeps are."""
    client = tracking.client()
    others = [
        e.name
        for e in client.search_experiments()
        if e.name != experiment
        and client.search_runs([e.experiment_id], FINISHED_SWEEPS, max_results=1)
    ]
    hint = (
        f"; finished sweeps are in {', '.join(repr(name) for name in others)}: pass the "
        "config they were trained with (--config), whose tracking.experiment names it"
        if others
        else "; run `pipeline train` first"
    )
    store = redact_uri(mlflow.get_tracking_uri())
    return f"no finished sweep to promote in experiment '{experiment}' of {store}{hint}"


def select_best(experiment_id: str, parent_run_id: str):
    """The best finished child run of a sweep by the rule above."""
    runs = tracking.client().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'FINISHED'"
        ),
        order_by=ORDER_BY,
        max_results=1,
    )
    if not runs:
        raise PipelineError(f"sweep {parent_run_id} has no finished model runs to promote")
    return runs[0]


def _label(value: str) -> str:
    """BentoML label values: letters, digits, '-', '_' and '.' only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value)[:63] or "_"


def save_to_bento(
    model, name: str, labels: dict[str, str], card: ModelCard, files: Path | None = None
) -> str:
    """Save a Keras model into the BentoML store as `model.keras`, its card as the model's
    metadata, and the contents of `files` beside it; returns its tag."""
    import bentoml

    with bentoml.models.create(
        name, labels={k: _label(str(v)) for k, v in labels.items()}, metadata=card.to_dict()
    ) as ref:
        model.save(ref.path_of("model.keras"))
        if files is not None:
            shutil.copytree(files, ref.path, dirs_exist_ok=True)
    return str(ref.tag)


def _shipped_artifacts(run_id: str, into: Path) -> None:
    """Download SHIPPED_ARTIFACTS of the run into `into`; a run logged before they existed
    lacks some, and its model is served without them."""
    logged = {item.path for item in tracking.client().list_artifacts(run_id)}
    for path in SHIPPED_ARTIFACTS:
        if path in logged:
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=into)


def package_run(
    run, bento_name: str, *, registered_model: str = "", registry_version: str = ""
) -> str:
    """Put a finished model run's model in the BentoML store with the card serving reads.

    `promote` does this for the champion; on its own it serves any run (a challenger, or the
    benchmark's LeNet) without touching the registry.
    """
    run_id = run.info.run_id
    model_uri = run.data.tags["model_uri"]
    metrics = run.data.metrics
    spec = tracking.logged_metadata(model_uri)["data_spec"]
    model = mlflow.keras.load_model(model_uri)
    card = ModelCard(
        architecture=run.data.tags["model"],
        dataset=spec["name"],
        class_names=tuple(spec["class_names"]),
        input_shape=tuple(spec["input_shape"]),
        mean=tuple(spec["mean"]),
        std=tuple(spec["std"]),
        normalisation=NORMALISATION,
        precision=model_precision(model),
        test_time_flip=is_flip_averaged(model),
        test_time_views=views_of(model).count,
        run_id=run_id,
        registered_model=registered_model,
        registry_version=registry_version,
        test_accuracy=float(metrics["test_accuracy"]),
        test_macro_f1=float(metrics["test_macro_f1"]),
        test_accuracy_one_view=metrics.get(ONE_VIEW_METRIC),
        test_accuracy_flip_only=metrics.get(FLIP_ONLY_METRIC),
        backend=run.data.tags.get("backend", "tensorflow"),
    )
    with tempfile.TemporaryDirectory(prefix="package-") as files:
        _shipped_artifacts(run_id, Path(files))
        return save_to_bento(
            model,
            bento_name,
            files=Path(files),
            labels={
                "run_id": run_id,
                "model": card.architecture,
                "dataset": card.dataset,
                "registry_version": registry_version or "none",
            },
            card=card,
        )


def promote(
    config: TrackingConfig, parent_run_id: str | None = None, key: str | None = None
) -> Promotion:
    """Register the sweep's best run, alias it `champion`, and put it in the BentoML store.

    Promoting the same run twice reuses its registry version instead of adding another.
    """
    experiment_id = tracking.setup(config)
    parent_run_id = parent_run_id or latest_sweep(experiment_id, key)
    run = select_best(experiment_id, parent_run_id)
    run_id = run.info.run_id
    model_uri = run.data.tags["model_uri"]
    metrics = run.data.metrics
    client = tracking.client()
    name = config.registered_model

    existing = [v for v in _versions(client, name) if v.run_id == run_id]
    version = existing[0].version if existing else mlflow.register_model(model_uri, name).version
    test_tags = {
        k: f"{metrics[k]:.4f}" for k in ("test_accuracy", "test_macro_f1", "best_val_accuracy")
    }
    for key, value in {**test_tags, "model": run.data.tags["model"], "run_id": run_id}.items():
        client.set_model_version_tag(name, version, key, value)
    before = champion_mismatch(config)
    if before:
        print(f"repairing an interrupted promotion: {before}", file=sys.stderr)
    client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
    bento_tag = package_run(run, name, registered_model=name, registry_version=str(version))
    after = champion_mismatch(config)
    if after:
        raise PipelineError(f"{after}; run `pipeline promote` again")
    return Promotion(
        run_id=run_id,
        model=run.data.tags["model"],
        version=str(version),
        bento_tag=bento_tag,
        best_val_accuracy=float(metrics["best_val_accuracy"]),
        test_accuracy=float(metrics["test_accuracy"]),
    )


def champion_mismatch(config: TrackingConfig) -> str | None:
    """Why the model `make serve` loads (the BentoML store's latest `registered_model`) is not
    the registry's champion, or None when they agree or there is no champion yet.

    Promotion sets the alias, then saves to BentoML; a kill between the two leaves them apart,
    and the next `pipeline promote` repairs it.
    """
    import bentoml

    name = config.registered_model
    try:
        champion = tracking.client().get_model_version_by_alias(name, CHAMPION_ALIAS)
    except mlflow.exceptions.MlflowException:
        return None
    try:
        served = bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        return f"the registry's champion is {name} v{champion.version}; the BentoML store has none"
    try:
        card = ModelCard.from_dict(served.info.metadata)
    except ModelCardError as exc:
        return f"BentoML's {served.tag} is not a model card of this version ({exc})"
    if (card.registry_version, card.run_id) != (str(champion.version), champion.run_id):
        return (
            f"the registry's champion is {name} v{champion.version} (run {champion.run_id}) "
            f"but BentoML's {served.tag} is v{card.registry_version} (run {card.run_id})"
        )
    return None


def _versions(client, name: str) -> list:
    try:
        return client.search_model_versions(f"name = '{name}'")
    except mlflow.exceptions.MlflowException:
        return []
