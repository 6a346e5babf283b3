"""Held-out evaluation with scikit-learn's metrics: confusion matrix, per-class report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from pipeline import plots
from pipeline.config import config_from_flat
from pipeline.data import DataSpec, load_splits
from pipeline.model_card import CONFUSION_MATRIX_FILE
from pipeline.scoring import row_normalised
from pipeline.tracking import logged_metadata


@dataclass(frozen=True)
class EvaluationReport:
    """Test-set metrics of one model; every number is a function of (y_true, y_pred)."""

    accuracy: float
    macro_f1: float
    confusion: np.ndarray
    per_class: pd.DataFrame

    def metrics(self, prefix: str = "test_") -> dict[str, float]:
        return {f"{prefix}accuracy": self.accuracy, f"{prefix}macro_f1": self.macro_f1}


def report(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> EvaluationReport:
    """Accuracy, macro F1, the confusion matrix (rows: true class) and precision/recall/F1."""
    labels = list(range(len(class_names)))
    per_class = classification_report(
        y_true,
        y_pred,
        labels=labels,
        target_names=list(class_names),
        output_dict=True,
        zero_division=0,
    )
    table = pd.DataFrame([{"class": name, **per_class[name]} for name in class_names]).rename(
        columns={"f1-score": "f1"}
    )
    return EvaluationReport(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        confusion=confusion_matrix(y_true, y_pred, labels=labels),
        per_class=table,
    )


def predict_logits(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for uint8 images, in inference mode."""
    return np.asarray(model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0))


def most_confident_errors(probs: np.ndarray, y_true: np.ndarray, count: int = 16) -> np.ndarray:
    """Indices of the misclassified images the model was surest about, most confident first."""
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    order = np.argsort(-probs[wrong, y_pred[wrong]])
    return wrong[order[:count]]


def write_report_files(result: EvaluationReport, class_names: Sequence[str], out: Path) -> None:
    """The confusion matrix (counts and row-normalised) and per-class table as CSV and PNG."""
    out.mkdir(parents=True, exist_ok=True)
    names = list(class_names)
    pd.DataFrame(result.confusion, index=names, columns=names).to_csv(out / "confusion_matrix.csv")
    pd.DataFrame(row_normalised(result.confusion), index=names, columns=names).round(4).to_csv(
        out / "confusion_matrix_normalized.csv"
    )
    result.per_class.to_csv(out / "per_class_report.csv", index=False)
    fig = plots.confusion_matrix_figure(result.confusion, names)
    fig.savefig(out / CONFUSION_MATRIX_FILE, dpi=110)
    plots.close(fig)


def evaluate_uri(model_uri: str, out: Path | None = None) -> tuple[EvaluationReport, dict]:
    """Recompute the test metrics of any logged or registered model from its recorded
    configuration, rebuilt by the typed loader.

    Returns the report and the model's data spec; writes the report files to `out` if given.
    """
    recorded = logged_metadata(model_uri)
    config = config_from_flat(recorded["data_config"])
    splits = load_splits(config.data, config.train.seed)
    spec = DataSpec.from_dict(recorded["data_spec"])
    model = mlflow.keras.load_model(model_uri)
    y_pred = predict_logits(model, splits.x_test).argmax(axis=1)
    result = report(splits.y_test, y_pred, spec.class_names)
    if out is not None:
        write_report_files(result, spec.class_names, out)
    return result, recorded["data_spec"]
