"""The reference profile: what the model saw on its validation split, to compare serving with.

Each model run writes it beside its evaluation (pipeline/tracked_run.py); packaging ships it
inside the BentoML model beside the model card; `pipeline monitor` compares the service's log
with it (pipeline/drift.py) and the demo page's live panel shows it beside the last requests.
It holds the per-image features of pipeline/features.py (up to `MAX_IMAGES` of them), the
class prior and the model's predicted class mix, the confidence and entropy histograms and the
validation confusion matrix.

NumPy and the standard library only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.features import NUMERIC_FEATURES, answer_features, pixel_features, rounded
from pipeline.model_card import REFERENCE_FILE

__all__ = ["REFERENCE_FILE", "ReferenceError", "ReferenceProfile", "build_profile"]

FORMAT = 1
#: Per-image features kept: enough for KS and PSI to resolve a few percent, small on disk.
MAX_IMAGES = 10_000
HISTOGRAM_BINS = 20


class ReferenceError(ValueError):
    """A reference profile file that is missing, unreadable or of another format."""


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]

    @classmethod
    def of(cls, values: np.ndarray, upper: float) -> Histogram:
        counts, edges = np.histogram(values, bins=HISTOGRAM_BINS, range=(0.0, upper))
        return cls([round(float(e), 6) for e in edges], [int(c) for c in counts])


@dataclass(frozen=True)
class ReferenceProfile:
    split: str
    images: int
    class_names: list[str]
    #: Feature name -> its value per image (a seeded sample of at most MAX_IMAGES).
    features: dict[str, list[float]]
    #: Fraction of the split's images in each class, and of the model's answers.
    class_prior: list[float]
    predicted_prior: list[float]
    confidence_histogram: Histogram
    entropy_histogram: Histogram
    #: Rows: true class, columns: predicted class, counts on the split.
    confusion_matrix: list[list[int]]
    accuracy: float
    format: int = FORMAT

    def values(self, feature: str) -> np.ndarray:
        return np.asarray(self.features[feature], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.to_dict()))
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        """The profile at `path`; ReferenceError in one line when it cannot be used."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ReferenceError(f"no reference profile at {path}") from None
        except (OSError, ValueError) as exc:
            raise ReferenceError(f"reference profile {path} is unreadable: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ReferenceError(
                f"reference profile {path} is not of format {FORMAT}; package the model again"
            )
        try:
            return cls(
                **{
                    **data,
                    "confidence_histogram": Histogram(**data["confidence_histogram"]),
                    "entropy_histogram": Histogram(**data["entropy_histogram"]),
                }
            )
        except (KeyError, TypeError) as exc:
            raise ReferenceError(f"reference profile {path} lacks a field: {exc}") from None


def build_profile(
    pixels: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    split: str = "validation",
    seed: int = 0,
) -> ReferenceProfile:
    """The profile of (N, H, W, C) uint8 `pixels` with true `labels` and the model's
    (N, classes) `probabilities` for them."""
    classes = len(class_names)
    answers = answer_features(probabilities)
    features = {**pixel_features(pixels), **answers}
    keep = np.arange(len(pixels))
    if len(keep) > MAX_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(keep, MAX_IMAGES, replace=False))
    predicted = answers["label"]
    confusion = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    return ReferenceProfile(
        split=split,
        images=len(pixels),
        class_names=list(class_names),
        features={k: rounded(k, features[k][keep]) for k in NUMERIC_FEATURES},
        class_prior=_fractions(np.bincount(labels, minlength=classes)),
        predicted_prior=_fractions(np.bincount(predicted, minlength=classes)),
        confidence_histogram=Histogram.of(answers["confidence"], 1.0),
        entropy_histogram=Histogram.of(answers["entropy"], math.log(classes)),
        confusion_matrix=confusion.tolist(),
        accuracy=float((predicted == labels).mean()),
    )


def _fractions(counts: np.ndarray) -> list[float]:
    return [round(float(c), 6) for c in counts / max(1, counts.sum())]
