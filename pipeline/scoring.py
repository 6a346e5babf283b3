"""Scores from logits and labels: the softmax and top-k rules that evaluation, prediction and
serving share, and the row-normalised confusion matrix of the reports and their plots.

NumPy only, so the service can import it without pulling in training code.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities per row of (N, classes) logits, shifted by each row's maximum so that
    large logits do not overflow."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(probabilities: np.ndarray, k: int) -> np.ndarray:
    """Per row, the indices of the `k` largest probabilities, largest first; ties keep the
    lower class index first (a stable sort)."""
    return np.argsort(-probabilities, axis=-1, kind="stable")[..., :k]


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (recall per true class); empty rows stay zero."""
    rows = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
