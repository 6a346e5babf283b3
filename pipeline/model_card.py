"""The model card: everything training hands serving about a packaged model, typed.

Packaging (pipeline/selection.py) writes it as the BentoML model's metadata; the service
(serving/service.py) reads it back with `ModelCard.from_dict`. Standard library only, so the
served bento needs no training module to read it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

#: Files of a run that packaging copies beside the served model, for the demo page and
#: for monitoring.
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
#: A folder of held-out images, one `NN.png` per class index.
EXAMPLES_DIR = "examples"
#: What the model saw on its validation split, for monitoring (pipeline/reference.py).
REFERENCE_FILE = "reference_profile.json"
SHIPPED_ARTIFACTS = (CONFUSION_MATRIX_FILE, EXAMPLES_DIR, REFERENCE_FILE)


class ModelCardError(ValueError):
    """A model's metadata is not a model card of this version (packaged by older code?)."""


@dataclass(frozen=True)
class ModelCard:
    #: Zoo architecture name (lenet, vgg, ...).
    architecture: str
    #: Dataset name, as the data step reports it (`fashion_mnist`, `folder:/path`, ...).
    dataset: str
    class_names: tuple[str, ...]
    #: Height, width, channels of the pixels the model takes, values 0-255.
    input_shape: tuple[int, int, int]
    #: Per-channel mean and standard deviation the model's own stem normalises with.
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: In words: what the model does to pixels before its first layer.
    normalisation: str
    #: The Keras dtype policy the model computes in, as trained and evaluated.
    precision: str
    #: Whether the model averages each image with its mirror image (pipeline/tta.py),
    #: which doubles its cost per image.
    test_time_flip: bool
    #: The MLflow run the model comes from, and its registry entry ("" and "" when none).
    run_id: str
    registered_model: str
    registry_version: str
    #: Held-out test metrics recorded by that run.
    test_accuracy: float
    test_macro_f1: float
    #: Passes of the network per image: 1, 2 with the flip, 10 with the flip and shifts
    #: (pipeline/tta.py). Cards packaged before shifts existed lack it: 1 or 2 by the flip.
    test_time_views: int = 0
    #: The same run's test accuracy with fewer views, so a server answering with fewer
    #: (SERVING_VIEWS) can say what it serves: the network alone, and the flip alone when the
    #: model also averages shifts. None where the run did not measure it.
    test_accuracy_one_view: float | None = None
    test_accuracy_flip_only: float | None = None
    #: The Keras backend the run trained on. The `.keras` file is backend-neutral: either
    #: backend serves it (tests/test_jax_backend.py). Older cards: TensorFlow, the only one.
    backend: str = "tensorflow"

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or not all(v > 0 for v in self.input_shape):
            raise ModelCardError(f"input_shape must be (height, width, channels): {self}")
        channels = self.input_shape[2]
        if len(self.mean) != channels or len(self.std) != channels:
            raise ModelCardError(f"mean and std need {channels} values each")
        if len(self.class_names) < 2:
            raise ModelCardError("a classifier needs at least 2 class names")
        if self.test_time_views == 0:
            object.__setattr__(self, "test_time_views", 2 if self.test_time_flip else 1)
        if self.test_time_views < 1 or (self.test_time_flip and self.test_time_views % 2):
            raise ModelCardError(
                f"test_time_views must be a positive count, even with the flip: {self}"
            )
        for key in (
            "test_accuracy",
            "test_macro_f1",
            "test_accuracy_one_view",
            "test_accuracy_flip_only",
        ):
            value = getattr(self, key)
            if value is None and key.startswith("test_accuracy_"):
                continue
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ModelCardError(f"{key} must be in [0, 1], got {value}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (tuples as lists), as stored in the BentoML model's metadata,
        which takes no nulls: a figure the run did not measure is left out."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if v is not None
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """The card stored by `to_dict`; a missing or mistyped field raises ModelCardError."""
        fields = dataclasses.fields(cls)
        missing = sorted(
            f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING
        )
        if missing:
            raise ModelCardError(
                f"model metadata lacks {', '.join(missing)}; package the run again with "
                "`pipeline package` or `pipeline promote`"
            )
        try:
            values = {f.name: _CONVERT[f.type](data[f.name]) for f in fields if f.name in data}
        except (TypeError, ValueError) as exc:
            raise ModelCardError(f"model metadata is not a model card: {exc}") from None
        return cls(**values)


def _strict_bool(value: Any) -> bool:
    """JSON true or false only: `bool("no")` would be True."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _strict_int(value: Any) -> int:
    """A JSON integer only: `int(True)` and `int(2.5)` would pass."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


#: How a stored (JSON) value becomes each field's type, by the field's annotation.
_CONVERT = {
    "str": str,
    "int": _strict_int,
    "float": float,
    "float | None": lambda v: None if v is None else float(v),
    "bool": _strict_bool,
    "tuple[str, ...]": lambda v: tuple(str(x) for x in v),
    "tuple[float, ...]": lambda v: tuple(float(x) for x in v),
    "tuple[int, int, int]": lambda v: tuple(int(x) for x in v),
}
