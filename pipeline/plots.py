"""Figures as functions of arrays: training curves, confusion matrix, image grids."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipeline.scoring import row_normalised


def training_curves(history: dict[str, Sequence[float]]) -> Figure:
    """Loss and accuracy per epoch, training beside validation."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = history.get(prefix + key, [])
            if len(values):
                ax.plot(range(1, len(values) + 1), values, style, label=(prefix or "train_") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion_matrix_figure(matrix: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Counts and row-normalised (recall per true class) matrices side by side."""
    normalised = row_normalised(matrix)
    n = len(class_names)
    fig, axes = plt.subplots(1, 2, figsize=(2 * max(6, 0.6 * n) + 2, max(5, 0.6 * n)))
    for ax, data, title, fmt in (
        (axes[0], matrix, "counts", "d"),
        (axes[1], normalised, "row-normalised", ".2f"),
    ):
        ax.imshow(data, cmap="Blues")
        ax.set_title(f"confusion matrix ({title})")
        ax.set_xticks(range(n), class_names, rotation=45, ha="right")
        ax.set_yticks(range(n), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 20:
            threshold = data.max() / 2
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        format(data[i, j], fmt),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if data[i, j] > threshold else "black",
                    )
    fig.tight_layout()
    return fig


def image_grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 8) -> Figure:
    """Images (N, H, W, C) with a title each, e.g. misclassified examples or filters."""
    n = max(len(images), 1)
    rows = int(np.ceil(n / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        image = np.asarray(image, dtype=float)
        lo, hi = image.min(), image.max()
        image = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray")
        ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Free a figure's memory once it is saved (pyplot keeps every open figure)."""
    plt.close(fig)
