"""The `pipeline` command: a thin Typer layer over the pure functions of the package.

Each command imports the modules it runs inside its own body: `pipeline --help` and
`pipeline data info` then start without loading TensorFlow or MLflow, which take seconds.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from pathlib import Path
from typing import Annotated

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import typer

from pipeline.errors import PipelineError
from pipeline.quiet import filter_native_stderr

filter_native_stderr()  # before any command imports TensorFlow

app = typer.Typer(help="Train, track, select and package the CNN zoo.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _every_command() -> None:
    """Checks run before any command."""
    from pipeline.backend import check_environment

    try:
        check_environment()
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def one_line_errors(func):
    """Turn a user error into one line on stderr and exit status 2, never a traceback.

    MLflow's own errors (an unknown model or alias, an unreachable tracking server) count as
    user errors: they name what to fix.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except PipelineError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            typer.echo(
                f"error: the disk is full{where}; free some space and run the same command "
                "again (an interrupted sweep resumes where it stopped)",
                err=True,
            )
            raise typer.Exit(2) from None
        except Exception as exc:
            if type(exc).__name__ != "MlflowException":
                raise
            first_line = (getattr(exc, "message", "") or str(exc)).strip().splitlines()[0]
            typer.echo(f"error: {first_line}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@data_app.command("info")
@one_line_errors
def data_info(
    dataset: Annotated[str, typer.Option(help="fashion_mnist, mnist, cifar10 or folder:PATH")] = (
        "fashion_mnist"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
) -> None:
    """Classes, image shape, and counts per split and per class."""
    import pandas as pd

    from pipeline.config import load_config
    from pipeline.data import describe_dataset, load_raw, make_splits

    config = load_config(None, [f"data.dataset={dataset}"])
    raw = load_raw(config.data)
    info = describe_dataset(raw, make_splits(raw, config.data, config.train.seed))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"dataset: {info['name']}")
    typer.echo(f"image shape: {'x'.join(map(str, info['image_shape']))}")
    typer.echo(f"published: {info['published']['train']} train, {info['published']['test']} test")
    typer.echo(f"splits: {info['splits']}")
    table = pd.DataFrame(info["per_class"], index=info["classes"])
    table.index.name = "class"
    typer.echo(table.to_string())


@app.command()
@one_line_errors
def describe(
    model: Annotated[
        str, typer.Argument(help="Architecture: lenet, alexnet, vgg, nin, googlenet, resnet")
    ],
    dataset: Annotated[str, typer.Option(help="Take the input shape of this dataset")] = (
        "fashion_mnist"
    ),
    input_shape: Annotated[str | None, typer.Option(help="H,W,C (overrides --dataset)")] = None,
    classes: Annotated[int | None, typer.Option(help="Number of classes")] = None,
    option: Annotated[list[str] | None, typer.Option(help="Model option key=value")] = None,
) -> None:
    """Per-layer table: geometry, output shape, parameters, FC-equivalent parameters, MACs."""
    from pipeline.config import load_config
    from pipeline.data import BUILT_IN, DataSpec
    from pipeline.describe import describe as describe_model
    from pipeline.describe import render
    from pipeline.models import build_model

    if input_shape:
        parts = input_shape.split(",")
        if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise PipelineError(f"--input-shape must be H,W,C, got {input_shape!r}")
        shape = tuple(int(p) for p in parts)
        n = classes or 10
    elif dataset in BUILT_IN:  # its shape is known without the data on disk
        shape = BUILT_IN[dataset].input_shape
        n = classes or len(BUILT_IN[dataset].class_names)
    else:
        raise PipelineError(f"--dataset {dataset!r} has no known shape; pass --input-shape H,W,C")
    overrides = [f"models=[{model}]", *(f"model_options.{model}.{o}" for o in option or [])]
    config = load_config(None, overrides)
    spec = DataSpec(
        "describe", shape, tuple(str(i) for i in range(n)), (0.0,) * shape[2], (1.0,) * shape[2]
    )
    try:
        keras_model = build_model(model, spec, config.for_model(model))
    except ValueError as exc:
        raise PipelineError(f"{model} cannot take input {shape}: {exc}") from None
    typer.echo(render(describe_model(keras_model)))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@one_line_errors
def train(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML config, e.g. configs/default.yaml")] = (
        None
    ),
) -> None:
    """Train the sweep, track it in MLflow, evaluate on the test set, promote the champion.

    Extra arguments are key=value overrides, e.g. `train.epochs=3 models=[lenet]`.
    """
    from pipeline.champion import CHAMPION_ALIAS
    from pipeline.config import load_config
    from pipeline.selection import promote
    from pipeline.sweep import train as run_sweep

    cfg = load_config(config, ctx.args)

    sweep = run_sweep(cfg)
    typer.echo("\n" + sweep.table().to_string(index=False))
    if cfg.tracking.promote:
        result = promote(cfg.tracking, sweep.parent_run_id)
        typer.echo(
            f"\nchampion: {result.model} (run {result.run_id}, "
            f"val acc {result.best_val_accuracy:.4f}, test acc {result.test_accuracy:.4f}) -> "
            f"{cfg.tracking.registered_model} "
            f"v{result.version} @{CHAMPION_ALIAS}, BentoML {result.bento_tag}"
        )


@app.command()
@one_line_errors
def promote(
    config: Annotated[Path | None, typer.Option(help="YAML config (tracking section)")] = None,
    sweep: Annotated[str | None, typer.Option(help="Parent run id; default: newest sweep")] = None,
) -> None:
    """Register the best run of a sweep as `champion` and save it to the BentoML store.

    With --config, the sweep trained with that configuration (its experiment, and its sweep
    when one matches exactly); without, the newest sweep of the default experiment."""
    from pipeline.config import load_config, sweep_key
    from pipeline.selection import promote as do_promote

    cfg = load_config(config)
    result = do_promote(cfg.tracking, sweep, sweep_key(cfg) if config is not None else None)
    typer.echo(json.dumps(result.__dict__, indent=2))


@app.command()
@one_line_errors
def package(
    run_id: Annotated[str, typer.Argument(help="A finished model run (not a sweep)")],
    name: Annotated[str, typer.Option(help="BentoML model name")] = "cnn-classifier-run",
    config: Annotated[Path | None, typer.Option(help="YAML config (tracking section)")] = None,
) -> None:
    """Save one run's model to the BentoML store, to serve it with SERVING_MODEL=<tag>."""
    from pipeline import tracking
    from pipeline.config import load_config
    from pipeline.selection import package_run

    tracking.setup(load_config(config).tracking)
    run = tracking.client().get_run(run_id)
    if "model_uri" not in run.data.tags:
        raise PipelineError(f"run {run_id} has no model; give the id of a model run, not a sweep")
    typer.echo(package_run(run, name))


@app.command()
@one_line_errors
def evaluate(
    model_uri: Annotated[str, typer.Argument(help="e.g. models:/cnn-classifier@champion")],
    out: Annotated[Path | None, typer.Option(help="Write confusion matrix and report here")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (tracking section)")] = None,
) -> None:
    """Recompute test accuracy, macro F1, confusion matrix and per-class report of a model."""
    from pipeline import tracking
    from pipeline.config import load_config
    from pipeline.evaluate import evaluate_uri

    tracking.setup(load_config(config).tracking)
    result, _ = evaluate_uri(model_uri, out)
    typer.echo(f"test accuracy: {result.accuracy:.4f}\nmacro F1: {result.macro_f1:.4f}")
    typer.echo(result.per_class.round(4).to_string(index=False))
    typer.echo("confusion matrix (rows: true, columns: predicted):")
    typer.echo(str(result.confusion))


@app.command()
@one_line_errors
def predict(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, WebP, BMP)")],
    model_uri: Annotated[str | None, typer.Option(help="Default: the registered champion")] = None,
    k: Annotated[int, typer.Option(min=1, help="How many labels per image")] = 3,
    config: Annotated[Path | None, typer.Option(help="YAML config (tracking section)")] = None,
) -> None:
    """Classify image files with the champion locally and print the top-k labels."""
    from pipeline import tracking
    from pipeline.champion import champion_uri
    from pipeline.config import load_config
    from pipeline.predict import predict_files

    cfg = load_config(config)
    tracking.setup(cfg.tracking)
    for result in predict_files(
        images, model_uri or champion_uri(cfg.tracking.registered_model), k
    ):
        labels = ", ".join(f"{label} {p:.3f}" for label, p in result.top)
        typer.echo(f"{result.path}: {labels}")


@app.command()
@one_line_errors
def results(
    config: Annotated[Path | None, typer.Option(help="YAML config (tracking section)")] = None,
    gpu_runs: Annotated[
        Path | None,
        typer.Option(help="The GPU proof's gpu-runs.tar.gz, or the folder it was unpacked in"),
    ] = None,
) -> None:
    """Write docs/RESULTS.md from the runs on all of Fashion-MNIST, beside the published
    accuracies and the zoo's targets (and the GPU proof's runs, with --gpu-runs)."""
    from pipeline.config import load_config
    from pipeline.results import write_results

    typer.echo(f"wrote {write_results(load_config(config).tracking, gpu_runs=gpu_runs)}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@one_line_errors
def monitor(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(help="Only records since: a duration (30m, 12h, 7d) or a date or time"),
    ] = None,
    skip_bad_lines: Annotated[
        bool, typer.Option(help="Leave out log lines that are not records, instead of stopping")
    ] = False,
    config: Annotated[Path | None, typer.Option(help="YAML config (monitor, tracking)")] = None,
) -> None:
    """Compare what the service saw with the served model's reference profile: an HTML report
    and an MLflow run; exit status 1 when anything drifted, 0 when nothing did.

    Extra arguments are key=value overrides, e.g. `monitor.psi_threshold=0.25`."""
    from pipeline.config import load_config
    from pipeline.monitor import monitor as run_monitor

    result = run_monitor(load_config(config, ctx.args), since, skip_bad_lines)
    drift = result.drift
    typer.echo(f"model {result.model_tag}: {drift.images} images in {drift.requests} requests")
    typer.echo(drift.features.round(4).to_string(index=False))
    labels = drift.labels
    typer.echo(f"label mix: chi-square {labels.chi2:.2f}, p-value {labels.p_value:.3g}")
    typer.echo(f"rule: {drift.rule}")
    typer.echo(f"report: {result.report}\nMLflow run: {result.run_id}")
    if drift.drifted:
        typer.echo(f"DRIFT: {', '.join(drift.drifted_names())}")
        raise typer.Exit(1)
    typer.echo("no drift")


@app.command("config-reference")
@one_line_errors
def config_reference() -> None:
    """Write docs/CONFIG.md, every configuration key, from the typed config itself."""
    from pipeline.config_reference import write

    typer.echo(f"wrote {write()}")


if __name__ == "__main__":
    app()
