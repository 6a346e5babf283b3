"""What monitoring records of each image and answer, and where, the same way in training and
serving: the reference profile (pipeline/reference.py) and the served log (serving/monitoring.py)
must measure one thing, or every comparison of the two is drift.

NumPy only: the service imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

#: The service's `bentoml.monitor` name: its log is `<log path>/cnn_classifier/data/`.
MONITOR_NAME = "cnn_classifier"


def default_log_path() -> Path:
    """`$BENTOML_HOME/monitoring`, beside the models the service loads: where it logs by
    default, and where `pipeline monitor` reads."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml") / "monitoring"


#: A pixel counts as near-white at this grey level (0-255, the mean over its channels) or
#: above: Fashion-MNIST's garments lie on black, a photo or a scan on white.
NEAR_WHITE = 224

#: Decimal digits each numeric feature is kept to, in the service's log and in the reference
#: profile alike: rounded differently, values on a bin edge land in different bins, and a
#: sharp distribution (a good model's confidence, mostly above 0.99) shows as drift.
DIGITS = {"pixel_mean": 2, "pixel_std": 2, "near_white": 4, "confidence": 4, "entropy": 4}
#: The numeric features drift is measured on, in the order reports show them.
PIXEL_FEATURES = ("pixel_mean", "pixel_std", "near_white")
ANSWER_FEATURES = ("confidence", "entropy")
NUMERIC_FEATURES = PIXEL_FEATURES + ANSWER_FEATURES


def pixel_features(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """Per image of (N, H, W, C) model-sized pixels in 0-255: the mean and standard deviation
    of its values, and the fraction of its pixels that are near-white.

    Two passes over float64 values (sums and sums of squares are exact for 8-bit pixels):
    the service runs it on every image it answers, and NumPy's mean and var took three times
    as long."""
    count, channels = len(pixels), pixels.shape[-1]
    values = pixels.reshape(count, -1).astype(np.float64)
    size = values.shape[1]
    mean = values.sum(axis=1) / size
    squares = np.einsum("ij,ij->i", values, values)
    # Near-white: the mean over the channels at NEAR_WHITE or above, in whole numbers.
    grey = pixels.reshape(count, -1) if channels == 1 else pixels.reshape(count, -1, channels)
    if channels > 1:
        grey = grey.sum(axis=2, dtype=np.uint32)
    return {
        "pixel_mean": mean,
        "pixel_std": np.sqrt(np.maximum(squares / size - mean * mean, 0.0)),
        "near_white": (grey >= NEAR_WHITE * channels).mean(axis=1),
    }


def answer_features(probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of (N, classes) probabilities: the top-1 class, its probability, and the
    entropy of the answer in nats (0 when sure, log(classes) when it cannot tell)."""
    p = np.clip(probabilities.astype(np.float64), 1e-12, 1.0)
    return {
        "label": probabilities.argmax(axis=1),
        "confidence": probabilities.max(axis=1).astype(np.float64),
        "entropy": -(p * np.log(p)).sum(axis=1),
    }


def rounded(name: str, values: np.ndarray) -> list[float]:
    """`values` of feature `name` as logged and profiled: rounded to DIGITS[name], in NumPy."""
    return np.round(np.asarray(values, dtype=np.float64), DIGITS[name]).tolist()
