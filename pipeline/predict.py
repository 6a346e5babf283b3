"""Local prediction with the registered champion: image files in, top-k labels out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from pipeline.errors import PipelineError
from pipeline.evaluate import predict_logits
from pipeline.preprocess import ImageDecodeError, ImageShape, image_bytes_to_pixels
from pipeline.scoring import softmax, top_k
from pipeline.tracking import logged_metadata


@dataclass(frozen=True)
class Prediction:
    path: str
    top: list[tuple[str, float]]


def predict_files(paths: list[Path], model_uri: str, k: int = 3) -> list[Prediction]:
    """Classify image files with a logged model, using the same preprocessing as the service."""
    spec = logged_metadata(model_uri)["data_spec"]
    shape = ImageShape.of(spec["input_shape"])
    pixels = []
    for path in paths:
        try:
            pixels.append(image_bytes_to_pixels(Path(path).read_bytes(), shape))
        except (OSError, ImageDecodeError) as exc:
            raise PipelineError(f"cannot use {path}: {exc}") from None
    model = mlflow.keras.load_model(model_uri)
    probs = softmax(predict_logits(model, np.stack(pixels)))
    names = spec["class_names"]
    return [
        Prediction(str(path), [(names[i], float(p[i])) for i in best])
        for path, p, best in zip(paths, probs, top_k(probs, k), strict=True)
    ]
