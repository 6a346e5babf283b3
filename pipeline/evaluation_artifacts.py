"""Everything a held-out evaluation writes, as files in one folder, with no tracking store.

The confusion matrix and per-class report (pipeline/evaluate.py), the training curves, the
misclassified images the model was surest about, its first-layer filters, feature maps of one
test image, one example image per class, and the validation split's reference profile for
monitoring (pipeline/reference.py). The tracked run logs the folder as its artifacts; packaging
ships three of them (`model_card.SHIPPED_ARTIFACTS`) beside the served model.
"""

from __future__ import annotations

from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np

from pipeline import plots
from pipeline.data import DataSpec
from pipeline.evaluate import (
    EvaluationReport,
    most_confident_errors,
    predict_logits,
    report,
    write_report_files,
)
from pipeline.model_card import EXAMPLES_DIR, REFERENCE_FILE
from pipeline.reference import build_profile
from pipeline.scoring import softmax
from pipeline.tta import base_model

#: The per-epoch metrics the training-curves figure shows.
CURVES = ("loss", "accuracy", "val_loss", "val_accuracy")


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _conv_stage_outputs(model: keras.Model) -> list[keras.KerasTensor]:
    """The activation after each convolution stage (the input of each pooling layer)."""
    outputs = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.MaxPooling2D | keras.layers.AveragePooling2D):
            inbound = layer.input
            if not isinstance(inbound, list):
                outputs.append(inbound)
    return outputs[:6]


def write_visuals(
    model: keras.Model, spec: DataSpec, x_test, y_test, probs: np.ndarray, out: Path
) -> None:
    """Misclassified grid, first-layer filters and feature maps of one test image."""
    errors = most_confident_errors(probs, y_test, count=16)
    names = spec.class_names
    titles = [
        f"true {names[y_test[i]]}\npred {names[probs[i].argmax()]} {probs[i].max():.2f}"
        for i in errors
    ]
    _save(plots.image_grid(x_test[errors], titles), out / "misclassified.png")

    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    kernel = keras.ops.convert_to_numpy(first_conv.kernel)  # kh, kw, C_in, C_out
    filters = np.moveaxis(kernel, -1, 0)[:32]  # C_out, kh, kw, C_in
    if filters.shape[-1] not in (1, 3):
        filters = filters[..., :1]
    _save(
        plots.image_grid(filters, [f"filter {i}" for i in range(len(filters))]),
        out / "first_layer_filters.png",
    )

    stages = _conv_stage_outputs(model)
    if stages:
        probe = keras.Model(model.inputs, stages)
        maps = probe.predict(x_test[:1].astype(np.float32), verbose=0)
        maps = maps if isinstance(maps, list) else [maps]
        images, titles = [], []
        for s, fmap in enumerate(maps):
            for c in range(min(8, fmap.shape[-1])):
                images.append(fmap[0, :, :, c : c + 1])
                titles.append(f"stage {s + 1} ch {c}")
        _save(plots.image_grid(images, titles), out / "feature_maps.png")


def write_examples(spec: DataSpec, x_test: np.ndarray, y_test: np.ndarray, out: Path) -> None:
    """The first test image of each class (up to 12 classes) as a PNG named `NN.png` after its
    class index: real held-out images for the service's demo page to offer."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for index in range(min(12, len(spec.class_names))):
        found = np.flatnonzero(y_test == index)
        if len(found):
            pixels = x_test[found[0]]
            image = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
            Image.fromarray(image.astype(np.uint8)).save(out / f"{index:02d}.png")


def write_evaluation(
    model: keras.Model,
    spec: DataSpec,
    x_test: np.ndarray,
    y_test: np.ndarray,
    history: dict[str, list[float]],
    out: Path,
) -> EvaluationReport:
    """Evaluate `model` on the held-out images and write every evaluation file into `out`."""
    probs = softmax(predict_logits(model, x_test))
    result = report(y_test, probs.argmax(axis=1), spec.class_names)
    write_report_files(result, spec.class_names, out)
    curves = plots.training_curves({k: history.get(k, []) for k in CURVES})
    _save(curves, out / "training_curves.png")
    # Filters and feature maps are the trained network's own, inside any test-time wrapper.
    write_visuals(base_model(model), spec, x_test, y_test, probs, out)
    write_examples(spec, x_test, y_test, out / EXAMPLES_DIR)
    return result


def write_reference(
    model: keras.Model, spec: DataSpec, x_val: np.ndarray, y_val: np.ndarray, out: Path
) -> Path:
    """The reference profile of the validation split (pipeline/reference.py): what monitoring
    compares the served images and answers with."""
    probs = softmax(predict_logits(model, x_val))
    return build_profile(x_val, y_val, probs, spec.class_names).save(out / REFERENCE_FILE)
