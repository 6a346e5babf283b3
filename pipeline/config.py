"""One typed configuration for a run: frozen dataclasses loaded from YAML, overridable by key=value.

Every value is checked here, before any data is read or any MLflow run is created, so a typo
stops the run with one line naming the key instead of failing an hour later.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError
from pipeline.models import options_for
from pipeline.precision import PRECISIONS
from pipeline.tta import Views
from pipeline.typed import build_dataclass, check

#: train.distribution values (pipeline/distribution.py): `mirrored` is TensorFlow's
#: MirroredStrategy, `data_parallel` Keras' DataParallel on JAX.
DISTRIBUTIONS = ("none", "mirrored", "data_parallel")

OPTIMIZERS = ("adam", "adamw", "sgd")
#: The sections a `per_model` entry may change. Data and tracking are the sweep's; a model's
#: own `model.*` values (width, dropout, ...) go in `model_options.<model>`, as before.
PER_MODEL_SECTIONS = ("augment", "train")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, how it is split and sliced."""

    #: fashion_mnist, mnist, cifar10, or folder:PATH (one sub-folder of images per class).
    dataset: str = "fashion_mnist"
    #: Height and width images are resized to; null keeps the dataset's own size.
    image_size: tuple[int, int] | None = None
    #: 1 (grayscale) or 3 (RGB) for folder datasets; null keeps the dataset's own channels.
    channels: int | None = None
    #: Share of the training set held out (stratified, seeded) for validation.
    val_fraction: float = 0.1
    #: Use at most this many training / test images (stratified); null uses all.
    train_limit: int | None = None
    #: The same for the test set.
    test_limit: int | None = None
    #: Keep decoded batches in memory between epochs.
    cache: bool = True

    def __post_init__(self) -> None:
        check(0.0 < self.val_fraction < 0.5, "data.val_fraction", "must be in (0, 0.5)")
        check(self.channels in (None, 1, 3), "data.channels", "must be 1, 3 or null")
        if self.image_size is not None:
            check(
                len(self.image_size) == 2 and all(8 <= side <= 1024 for side in self.image_size),
                "data.image_size",
                "must be [height, width], each from 8 to 1024",
            )
        for key in ("train_limit", "test_limit"):
            value = getattr(self, key)
            check(value is None or value >= 10, f"data.{key}", "must be >= 10 or null")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-only augmentation, one layer in the training graph (pipeline/augment.py)."""

    #: false trains on the images as they are (and forbids the test-time views below).
    enabled: bool = True
    #: Random horizontal flip (right for clothing and objects, wrong for digits).
    flip: bool = True
    #: Random translation as a fraction of height/width (a random crop of a padded image).
    translate: float = 0.1
    #: Random zoom in/out as a fraction.
    zoom: float = 0.1
    #: Random rotation as a fraction of a full turn.
    rotation: float = 0.0
    #: Random contrast factor.
    contrast: float = 0.1
    #: Random brightness factor.
    brightness: float = 0.1
    #: Probability of random erasing: one rectangle of 2-25% of the image set to noise.
    erasing: float = 0.0
    #: Test-time flip: the evaluated, logged and served model answers with the mean of its
    #: logits for an image and its mirror image (pipeline/tta.py), at twice the
    #: inference cost. Needs `flip`: a model should not be asked about views it never saw.
    test_flip: bool = False
    #: Test-time shifts: with N > 0 every view is also averaged moved N pixels up, down, left
    #: and right (zeros filling), 5x the views: 10 with the flip. Needs `translate`, and N
    #: within what translation moves an image in training.
    test_shift: int = 0

    #: The transforms with a strength in [0, 1); 0 turns one off.
    FACTORS: typing.ClassVar = (
        "translate",
        "zoom",
        "rotation",
        "contrast",
        "brightness",
        "erasing",
    )

    def __post_init__(self) -> None:
        for key in self.FACTORS:
            check(0.0 <= getattr(self, key) < 1.0, f"augment.{key}", "must be in [0, 1)")
        check(
            not self.test_flip or (self.enabled and self.flip),
            "augment.test_flip",
            "needs augment.enabled and augment.flip: the model never saw mirrored images",
        )
        check(
            0 <= self.test_shift <= 4,
            "augment.test_shift",
            "must be a whole number of pixels from 0 (off) to 4",
        )
        check(
            not self.test_shift or (self.enabled and self.translate > 0),
            "augment.test_shift",
            "needs augment.enabled and augment.translate: the model never saw moved images",
        )

    @property
    def test_views(self) -> Views:
        """What the evaluated, logged and served model averages (pipeline/tta.py)."""
        return Views(flip=self.test_flip, shift=self.test_shift)


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters shared by every architecture of the sweep."""

    #: Dropout rate before each fully connected layer (and where the architecture places it).
    dropout: float = 0.5
    #: Multiplies every layer's channel / unit count (0.5 halves the model).
    width: float = 1.0
    #: Batch normalisation after each convolution (and dense layer).
    batch_norm: bool = False
    #: relu, sigmoid, tanh, gelu, elu or swish.
    activation: str = "relu"

    def __post_init__(self) -> None:
        check(0.0 <= self.dropout < 1.0, "model.dropout", "must be in [0, 1)")
        check(0.0 < self.width <= 8.0, "model.width", "must be in (0, 8]")
        check(
            self.activation in ("relu", "sigmoid", "tanh", "gelu", "elu", "swish"),
            "model.activation",
            "must be one of relu, sigmoid, tanh, gelu, elu, swish",
        )


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation: optimiser, schedule, batch size, epochs, early stopping, seed."""

    #: Passes over the training set (at most; early stopping may end sooner).
    epochs: int = 10
    #: Images per training step.
    batch_size: int = 128
    #: adam, adamw or sgd (Nesterov momentum); adam with a weight decay is refused.
    optimizer: str = "adamw"
    #: Peak learning rate (after the warm-up).
    learning_rate: float = 1e-3
    #: Decoupled weight decay (adamw, sgd).
    weight_decay: float = 1e-4
    #: Only used by sgd.
    momentum: float = 0.9
    #: Share of each one-hot target spread over all classes (Szegedy et al., 2016); 0 is off.
    label_smoothing: float = 0.0
    #: constant, or cosine decay to zero over the epochs after the warm-up.
    schedule: str = "cosine"
    #: Epochs of linear warm-up from zero to the learning rate.
    warmup_epochs: int = 0
    #: Stop after this many epochs without a better validation loss; 0 disables it.
    early_stopping_patience: int = 5
    #: Seed of the split, the shuffle, the initial weights and the augmentation.
    seed: int = 42
    #: Compile the train step with XLA (TensorFlow; under JAX every step is XLA).
    jit_compile: bool = False
    #: Training steps per compiled program (Keras' `steps_per_execution`): fewer round trips
    #: to the device per step for a longer compile. Pays on a GPU, not on a CPU.
    steps_per_execution: int = 1
    #: Training-mode batch norm in TensorFlow's fused kernel (pipeline/batch_norm.py);
    #: false keeps Keras' own ops, which the benchmark compares it with. Left out under JAX.
    fused_batch_norm: bool = True
    #: Keras dtype policy: float32, mixed_bfloat16, mixed_float16, or auto (bf16 where the GPU
    #: or CPU computes in it; see pipeline/precision.py). The served model keeps it.
    precision: str = "float32"
    #: Make the ops repeatable run to run (TensorFlow's op determinism; XLA's flag for GPU
    #: kernels under JAX).
    deterministic: bool = True
    #: `mirrored` (TensorFlow): tf.distribute.MirroredStrategy over every GPU, or without one
    #: over `cpu_devices` logical CPU devices, which checks the path but does not train
    #: faster. `data_parallel` (JAX): keras.distribution.DataParallel over every local
    #: device. `none`: one device. pipeline/distribution.py.
    distribution: str = "none"
    #: Logical CPU devices for `mirrored` on a machine without a GPU.
    cpu_devices: int = 2

    def __post_init__(self) -> None:
        check(
            self.distribution in DISTRIBUTIONS,
            "train.distribution",
            f"must be one of {DISTRIBUTIONS}",
        )
        check(
            1 <= self.steps_per_execution <= 1024,
            "train.steps_per_execution",
            "must be in [1, 1024]",
        )
        check(2 <= self.cpu_devices <= 64, "train.cpu_devices", "must be in [2, 64]")
        check(1 <= self.epochs <= 10_000, "train.epochs", "must be in [1, 10000]")
        check(1 <= self.batch_size <= 4096, "train.batch_size", "must be in [1, 4096]")
        check(self.optimizer in OPTIMIZERS, "train.optimizer", f"must be one of {OPTIMIZERS}")
        check(self.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES}")
        check(self.precision in PRECISIONS, "train.precision", f"must be one of {PRECISIONS}")
        check(0.0 < self.learning_rate < 10.0, "train.learning_rate", "must be in (0, 10)")
        check(0.0 <= self.weight_decay <= 1.0, "train.weight_decay", "must be in [0, 1]")
        check(0.0 <= self.momentum < 1.0, "train.momentum", "must be in [0, 1)")
        check(0 <= self.seed < 2**32, "train.seed", "must be in [0, 2**32)")
        check(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", "must be in [0, 1)")
        check(0 <= self.warmup_epochs < self.epochs, "train.warmup_epochs", "must be < epochs")
        check(self.early_stopping_patience >= 0, "train.early_stopping_patience", "must be >= 0")
        check(
            not (self.optimizer == "adam" and self.weight_decay),
            "train.weight_decay",
            "is not applied by train.optimizer=adam; use adamw, or set train.weight_decay=0",
        )


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs, registered models and checkpoints go."""

    #: MLflow tracking URI; null uses $MLFLOW_TRACKING_URI, else the embedded SQLite store.
    tracking_uri: str | None = None
    #: MLflow experiment of the sweep's runs.
    experiment: str = "cnn-zoo"
    #: Name in the MLflow Model Registry and in the BentoML model store.
    registered_model: str = "cnn-classifier"
    #: Where per-epoch checkpoints live while a run is unfinished; null: ./checkpoints.
    checkpoint_dir: str | None = None
    #: Register the best run and save it to the BentoML store when the sweep ends.
    promote: bool = True


@dataclass(frozen=True)
class MonitorConfig:
    """`pipeline monitor`: which log, which model, and when its inputs count as drifted."""

    #: The service's monitoring folder (BentoML's `monitoring.options.log_path`); null:
    #: $BENTOML_HOME/monitoring, where the service writes by default.
    logs: str | None = None
    #: The BentoML model tag whose records are compared; null: the newest
    #: `tracking.registered_model` in the BentoML store (what the service serves by default).
    model: str | None = None
    #: A numeric feature drifts when its population stability index reaches this (0.1 is a
    #: small shift, 0.2 the usual alarm, 0.25 a large one).
    psi_threshold: float = 0.2
    #: The predicted-label mix drifts when the chi-square test against the reference's gives
    #: a p-value below this.
    label_p_value: float = 0.001
    #: Fewer image records than this in the window stop the comparison: too few to judge.
    min_images: int = 100
    #: MLflow experiment of the monitoring runs (one run per `pipeline monitor`).
    experiment: str = "cnn-zoo-monitoring"
    #: Folder of the HTML reports; null: `reports/` in the monitoring folder.
    report_dir: str | None = None

    def __post_init__(self) -> None:
        check(self.psi_threshold > 0, "monitor.psi_threshold", "must be above 0")
        check(0 < self.label_p_value < 1, "monitor.label_p_value", "must be in (0, 1)")
        check(self.min_images >= 10, "monitor.min_images", "must be at least 10")


@dataclass(frozen=True)
class Config:
    """A whole sweep: the models to train and everything they share."""

    #: Architectures to train, by registry name (see `pipeline describe`).
    models: tuple[str, ...] = ("lenet", "vgg")
    #: Per-architecture options, e.g. {vgg: {preset: vgg11}, lenet: {classic: true}}.
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Per-architecture recipe: values of the augment and train sections that differ for one
    #: model, e.g. {lenet: {augment: {erasing: 0}, train: {batch_size: 256}}}.
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)

    def __post_init__(self) -> None:
        check(len(self.models) > 0, "models", "must name at least one model")
        # Options of models outside this sweep are checked too, so a profile stays valid
        # whichever subset of its models `MODELS=...` picks.
        for name in {*self.models, *self.model_options}:
            self.for_model(name)
        for name in self.per_model:
            self.for_model(name)  # the name must be an architecture
            self.for_run(name)

    def for_run(self, name: str) -> Config:
        """The configuration model `name` trains with: its `per_model` values in place of the
        shared ones. Its `per_model` is empty, so its `flat()` is exactly that recipe."""
        own = self.per_model.get(name, {})
        prefix = f"per_model.{name}."
        if not isinstance(own, dict):
            raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping")
        sections: dict[str, Any] = {}
        for section, values in own.items():
            if section not in PER_MODEL_SECTIONS:
                raise ConfigError(
                    f"unknown config key '{prefix}{section}'; per_model takes {PER_MODEL_SECTIONS}"
                )
            shared = dataclasses.asdict(getattr(self, section))
            try:
                sections[section] = build_dataclass(
                    type(getattr(self, section)),
                    {**shared, **(values or {})},
                    f"{prefix}{section}.",
                )
            except ConfigError as exc:  # a range check names the shared key: name this one
                message = str(exc)
                if f"'{prefix}" not in message:
                    message = message.replace("config key '", f"config key '{prefix}", 1)
                raise ConfigError(message) from None
        return dataclasses.replace(self, per_model={}, **sections)

    def for_model(self, name: str):
        """The typed options (`pipeline.models.<name>.Options`) architecture `name` is built
        with: the shared `model` section overlaid with its `model_options.<name>`."""
        own = self.model_options.get(name) or {}
        if not isinstance(own, dict):
            raise ConfigError(f"config key 'model_options.{name}' must be a mapping")
        return options_for(name, own, self.model)

    def flat(self) -> dict[str, Any]:
        """Every value under its dotted key, as logged to MLflow (credentials masked). The
        `monitor` section is no part of a run's recipe: left out, it changes no sweep key."""
        tree = dataclasses.asdict(self)
        del tree["monitor"]
        flat = _flatten(tree)
        if flat.get("tracking.tracking_uri"):
            flat["tracking.tracking_uri"] = redact_uri(flat["tracking.tracking_uri"])
        return flat


#: Query parameters of a URI whose values are secrets.
SECRET_QUERY_KEYS = ("password", "passwd", "secret", "token", "key", "sslpassword")


def sweep_key(config: Config) -> str:
    """Identifies a configuration: the same key on restart means 'resume this sweep', and
    `pipeline promote --config` looks for the sweep trained with it."""
    blob = json.dumps(config.flat(), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def redact_uri(uri: str) -> str:
    """`uri` with its password and secret-looking query values replaced by `***`, so that a
    tracking URI such as postgresql://user:pw@host/db can be logged and printed. A URI with
    nothing secret comes back unchanged."""
    parts = urllib.parse.urlsplit(uri)
    pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    secret = [any(word in k.lower() for word in SECRET_QUERY_KEYS) for k, _ in pairs]
    if parts.password is None and not any(secret):
        return uri
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
    query = urllib.parse.urlencode(
        [(k, "***" if hide else v) for (k, v), hide in zip(pairs, secret, strict=True)],
        safe="*",
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = list(value) if isinstance(value, tuple) else value
    return flat


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{assignment}' must look like key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{assignment}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load_config(path: Path | str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML config (or the defaults), apply `key=value` overrides, validate everything."""
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pick one in configs/")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            where = f" at line {line + 1}" if line is not None else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}") from exc
    for assignment in overrides:
        _apply_override(tree, assignment)
    return build_dataclass(Config, tree)


def config_from_flat(flat: dict[str, Any]) -> Config:
    """The configuration `Config.flat()` recorded (as a logged model's metadata holds it),
    rebuilt and checked by the same typed loader as a YAML file."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *sections, last = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = value
    return build_dataclass(Config, tree)
