"""Evaluation as functions of arrays: metrics, the report, its files, on hand-made labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.evaluate import most_confident_errors, report, write_report_files
from pipeline.scoring import row_normalised, softmax, top_k

CLASSES = ("cat", "dog", "owl")
#: Six hand-made predictions: cat right once and taken for a dog once, both dogs right,
#: one owl right and one taken for a cat.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0])


def test_report_counts_what_a_person_counts():
    result = report(Y_TRUE, Y_PRED, CLASSES)
    assert result.accuracy == pytest.approx(4 / 6)
    np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    table = result.per_class.set_index("class")
    # cat: precision 1/2 (one of two "cat"s), recall 1/2; dog: 2/3 and 1; owl: 1 and 1/2.
    assert table.loc["cat", "precision"] == pytest.approx(0.5)
    assert table.loc["dog", "precision"] == pytest.approx(2 / 3)
    assert table.loc["dog", "recall"] == pytest.approx(1.0)
    assert table.loc["owl", "recall"] == pytest.approx(0.5)
    f1 = {"cat": 0.5, "dog": 0.8, "owl": 2 / 3}
    assert table["f1"].to_dict() == pytest.approx(f1)
    assert result.macro_f1 == pytest.approx(sum(f1.values()) / 3)
    assert table["support"].tolist() == [2, 2, 2]
    assert result.metrics() == {"test_accuracy": result.accuracy, "test_macro_f1": result.macro_f1}


def test_a_class_never_predicted_nor_present_still_has_its_row():
    result = report(np.array([0, 0]), np.array([0, 1]), CLASSES)
    assert result.confusion.shape == (3, 3) and result.confusion[2].sum() == 0
    assert result.per_class.set_index("class").loc["owl", "f1"] == 0.0


def test_row_normalised_gives_recall_per_true_class_and_zero_for_empty_rows():
    matrix = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 3]])
    np.testing.assert_allclose(
        row_normalised(matrix), [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0], [0.25, 0.0, 0.75]]
    )


def test_most_confident_errors_come_surest_first_and_skip_right_answers():
    probs = np.array(
        [
            [0.9, 0.1, 0.0],  # right
            [0.2, 0.7, 0.1],  # wrong (true 0), 0.7 sure
            [0.05, 0.05, 0.9],  # wrong (true 1), 0.9 sure
            [0.4, 0.35, 0.25],  # wrong (true 2), 0.4 sure
        ]
    )
    y_true = np.array([0, 0, 1, 2])
    assert most_confident_errors(probs, y_true).tolist() == [2, 1, 3]
    assert most_confident_errors(probs, y_true, count=1).tolist() == [2]


def test_report_files_agree_with_the_report(tmp_path):
    result = report(Y_TRUE, Y_PRED, CLASSES)
    write_report_files(result, CLASSES, tmp_path)
    counts = pd.read_csv(tmp_path / "confusion_matrix.csv", index_col=0)
    assert list(counts.index) == list(CLASSES) and counts.to_numpy().tolist() == [
        [1, 1, 0],
        [0, 2, 0],
        [1, 0, 1],
    ]
    normalised = pd.read_csv(tmp_path / "confusion_matrix_normalized.csv", index_col=0)
    np.testing.assert_allclose(normalised.to_numpy().sum(axis=1), [1.0, 1.0, 1.0])
    per_class = pd.read_csv(tmp_path / "per_class_report.csv")
    assert per_class["class"].tolist() == list(CLASSES)
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_softmax_rows_sum_to_one_and_ignore_a_shift_and_huge_logits():
    logits = np.array([[1.0, 2.0, 3.0], [1000.0, 1001.0, 1002.0], [0.0, 0.0, 0.0]])
    probs = softmax(logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[0], probs[1])  # no overflow at 1000
    np.testing.assert_allclose(probs[2], [1 / 3] * 3)
    np.testing.assert_allclose(probs[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())


def test_top_k_is_largest_first_and_breaks_ties_by_class_index():
    probs = np.array([[0.1, 0.6, 0.3], [0.4, 0.2, 0.4]])
    assert top_k(probs, 2).tolist() == [[1, 2], [0, 2]]
    assert top_k(probs, 1).tolist() == [[1], [0]]


def test_an_evaluation_writes_every_file_a_run_logs(tmp_path):
    """The folder a tracked run logs: report files, curves, the mistakes grid, filters,
    feature maps and one example image per class, from a model and held-out images alone."""
    from PIL import Image

    from pipeline.evaluation_artifacts import write_evaluation
    from pipeline.models import build_model
    from tests.helpers import garments, spec_for

    spec = spec_for((28, 28, 1), classes=3)
    images, labels = garments(12), np.arange(12) % 3
    model = build_model("lenet", spec)
    history = {"loss": [1.0, 0.8], "accuracy": [0.5, 0.6], "val_loss": [1.1, 0.9]}
    result = write_evaluation(model, spec, images, labels, history, tmp_path)
    written = {p.name for p in tmp_path.iterdir()}
    assert written >= {
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "per_class_report.csv",
        "training_curves.png",
        "misclassified.png",
        "first_layer_filters.png",
        "feature_maps.png",
        "examples",
    }
    assert result.confusion.sum() == 12
    examples = sorted(p.name for p in (tmp_path / "examples").iterdir())
    assert examples == ["00.png", "01.png", "02.png"]
    first = np.asarray(Image.open(tmp_path / "examples" / "01.png"))
    np.testing.assert_array_equal(first, images[1, ..., 0])  # the first test image of class 1
