"""Configuration: profiles load, overrides apply with types, mistakes stop with one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipeline import paths
from pipeline.config import Config, load_config
from pipeline.errors import ConfigError
from tests.helpers import tool


@pytest.mark.parametrize("profile", ["quick", "default", "full", "zoo"])
def test_every_profile_is_valid(profile):
    config = load_config(paths.CONFIG_DIR / f"{profile}.yaml")
    assert isinstance(config, Config)
    assert config.data.dataset == "fashion_mnist"


def test_default_profile_trains_lenet_and_a_small_vgg():
    config = load_config(paths.CONFIG_DIR / "default.yaml")
    assert config.models == ("lenet", "vgg")
    assert config.model_options["vgg"]["preset"] == "small"


def test_full_profile_trains_the_whole_zoo():
    config = load_config(paths.CONFIG_DIR / "full.yaml")
    assert set(config.models) == {"lenet", "alexnet", "vgg", "nin", "googlenet"}


def test_overrides_are_typed_and_nested():
    config = load_config(
        paths.CONFIG_DIR / "quick.yaml",
        [
            "train.epochs=7",
            "train.learning_rate=0.01",
            "models=[lenet]",
            "data.image_size=[32,32]",
            "model_options.lenet.classic=true",
            "augment.flip=false",
        ],
    )
    assert config.train.epochs == 7
    assert config.train.learning_rate == 0.01
    assert config.models == ("lenet",)
    assert config.data.image_size == (32, 32)
    assert config.for_model("lenet").classic is True
    assert config.augment.flip is False


def test_per_model_values_replace_the_shared_ones_for_that_model_only():
    config = load_config(
        paths.CONFIG_DIR / "zoo.yaml",
        ["per_model.vgg.train.batch_size=64", "per_model.vgg.augment.erasing=0"],
    )
    vgg, nin = config.for_run("vgg"), config.for_run("nin")
    assert (vgg.train.batch_size, vgg.augment.erasing) == (64, 0.0)
    assert (nin.train.batch_size, nin.augment.erasing) == (
        config.train.batch_size,
        config.augment.erasing,
    )
    assert vgg.train.epochs == config.train.epochs  # keys not named stay shared
    # What a run logs is its own recipe, with no per_model left to read it against.
    assert vgg.flat()["train.batch_size"] == 64 and vgg.per_model == {}


def test_integer_is_accepted_for_a_float():
    assert load_config(None, ["train.learning_rate=1"]).train.learning_rate == 1.0


def test_credentials_in_a_tracking_uri_are_never_logged():
    uri = "postgresql://alice:s3cret@db.internal:5432/mlflow?sslmode=require&sslpassword=k3y"
    flat = load_config(None, [f"tracking.tracking_uri={uri}"]).flat()
    logged = flat["tracking.tracking_uri"]
    assert "s3cret" not in logged and "k3y" not in logged
    assert logged.startswith("postgresql://alice:***@db.internal:5432/mlflow?")
    assert "sslmode=require" in logged
    plain = "sqlite:////tmp/store/mlflow.db"
    assert (
        load_config(None, [f"tracking.tracking_uri={plain}"]).flat()["tracking.tracking_uri"]
        == plain
    )


def test_flat_has_every_dotted_key():
    flat = load_config(None).flat()
    assert flat["train.epochs"] == 10
    assert flat["data.dataset"] == "fashion_mnist"
    assert flat["models"] == ["lenet", "vgg"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["trian.epochs=3"], "unknown config key 'trian'; did you mean 'train'?"),
        (["train.epoch=3"], "did you mean 'train.epochs'?"),
        (["train.epochs=0"], "config key 'train.epochs' must be in [1, 10000]"),
        (["train.weight_decay=.inf"], "config key 'train.weight_decay' must be in [0, 1]"),
        (["train.weight_decay=.nan"], "config key 'train.weight_decay' must be in [0, 1]"),
        (["train.learning_rate=.nan"], "config key 'train.learning_rate' must be in (0, 10)"),
        (["train.momentum=1.5"], "config key 'train.momentum' must be in [0, 1)"),
        (["train.seed=-1"], "config key 'train.seed' must be in [0, 2**32)"),
        (["data.image_size=[100000,100000]"], "config key 'data.image_size' must be"),
        (["train.epochs=three"], "config key 'train.epochs' must be of type int"),
        (["train.optimizer=rmsprop"], "config key 'train.optimizer' must be one of"),
        (["data.val_fraction=0.9"], "config key 'data.val_fraction' must be in (0, 0.5)"),
        (["models=[lenet,densenet]"], "unknown model 'densenet'"),
        (["model_options.vgg.depth=3"], "unknown config key 'model_options.vgg.depth'"),
        (["train.epochs"], "must look like key=value"),
        (["augment.zoom=2"], "config key 'augment.zoom' must be in [0, 1)"),
        (["train.precision=float8"], "config key 'train.precision' must be one of"),
        (["per_model.lenet.train.epochs=0"], "config key 'per_model.lenet.train.epochs' must"),
        (["per_model.lenet.train.epoch=3"], "did you mean 'per_model.lenet.train.epochs'?"),
        (["per_model.lenet.data.train_limit=9"], "per_model takes ('augment', 'train')"),
        (["per_model.densenet.train.epochs=3"], "unknown model 'densenet'"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(paths.CONFIG_DIR / "quick.yaml", overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


@pytest.mark.slow  # a `pipeline` process of its own
def test_cli_bad_config_stops_with_one_line_and_creates_nothing(tmp_path):
    store = tmp_path / "store"
    proc = subprocess.run(
        [
            tool("pipeline"),
            "train",
            "--config",
            str(paths.CONFIG_DIR / "quick.yaml"),
            f"tracking.tracking_uri=sqlite:///{store}/m.db",
            "train.batch_size=-4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: config key 'train.batch_size' must be in [1, 4096]"]
    assert "Traceback" not in proc.stderr
    assert not store.exists()


@pytest.mark.slow  # a `pipeline` process of its own
def test_cli_unknown_model_uri_is_one_line(tmp_path):
    proc = subprocess.run(
        [tool("pipeline"), "evaluate", "models:/nope@champion"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nope" in errors[0], proc.stderr[-2000:]


def test_a_full_disk_is_one_line_not_a_traceback(capsys):
    """What a full disk raises while logging or checkpointing (errno ENOSPC) becomes one line;
    other OS errors are not hidden."""
    import errno

    import typer

    from pipeline.cli import one_line_errors

    @one_line_errors
    def write(code: int) -> None:
        raise OSError(code, os.strerror(code), "/store/mlruns/1/artifacts/model.keras")

    with pytest.raises(typer.Exit) as caught:
        write(errno.ENOSPC)
    assert caught.value.exit_code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the disk is full writing /store/mlruns/1/artifacts/model.keras")
    assert "\n" not in err
    with pytest.raises(PermissionError):
        write(errno.EACCES)


@pytest.mark.parametrize("profile", ["quick", "default", "full", "zoo"])
def test_a_logged_configuration_is_rebuilt_by_the_typed_loader(profile):
    """What a logged model's metadata holds (`flat()`, through JSON) gives the same config
    back, each model's own recipe too."""
    import json

    from pipeline.config import config_from_flat

    config = load_config(paths.CONFIG_DIR / f"{profile}.yaml")
    for name in config.models:
        recipe = config.for_run(name)
        recorded = json.loads(json.dumps(recipe.flat(), default=str))
        assert config_from_flat(recorded) == recipe


def test_a_recorded_configuration_with_a_bad_value_is_refused_like_a_file():
    from pipeline.config import config_from_flat

    flat = load_config(None).flat()
    with pytest.raises(ConfigError, match="'train.batch_size' must be in"):
        config_from_flat({**flat, "train.batch_size": 0})


def test_loading_every_profile_imports_no_tensorflow():
    """Each model's typed options are built at load; their modules import Keras only to build."""
    code = (
        "import sys\n"
        "from pipeline import paths\n"
        "from pipeline.config import load_config\n"
        "for profile in sorted(paths.CONFIG_DIR.glob('*.yaml')):\n"
        "    load_config(profile, ['models=[lenet,alexnet,vgg,nin,googlenet,resnet]'])\n"
        "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_the_configuration_reference_is_generated_from_the_config_and_current():
    """docs/CONFIG.md is what `pipeline config-reference` writes today: every key is in it."""
    import dataclasses

    from pipeline.config import Config
    from pipeline.config_reference import reference

    text = reference()
    assert (paths.DOCS_DIR / "CONFIG.md").read_text() == text, "run pipeline config-reference"
    for section in ("data", "augment", "model", "train", "tracking"):
        for field in dataclasses.fields(getattr(Config(), section)):
            assert f"| `{section}.{field.name}` |" in text
    assert "| `model_options.vgg.preset` | `str` | `small` |" in text


@pytest.mark.slow  # a `pipeline` process of its own
def test_cli_an_unknown_keras_backend_is_one_line(tmp_path):
    """Keras would fail on the missing package with a traceback; the CLI stops first."""
    proc = subprocess.run(
        [tool("pipeline"), "describe", "lenet"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "KERAS_BACKEND": "torch"},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: KERAS_BACKEND=torch is not a backend this project runs on: set it to one of "
        "tensorflow, jax, or leave it unset for tensorflow"
    ]
