"""The typed model card between training and serving, and what serving may import."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import paths
from pipeline.model_card import ModelCard, ModelCardError
from tests.helpers import CARD, SHARED_MODULES


def test_the_card_survives_the_metadata_round_trip():
    stored = CARD.to_dict()
    assert stored["input_shape"] == [28, 28, 1] and stored["class_names"][1] == "Trouser"
    # BentoML's metadata takes no nulls: a figure the run did not measure is left out.
    assert None not in stored.values() and "test_accuracy_flip_only" not in stored
    assert ModelCard.from_dict(yaml.safe_load(yaml.safe_dump(stored))) == CARD


def test_a_card_missing_a_field_says_which_and_how_to_fix_it():
    stored = CARD.to_dict()
    del stored["precision"]
    with pytest.raises(ModelCardError, match="lacks precision; package the run again"):
        ModelCard.from_dict(stored)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("input_shape", (28, 28), "input_shape"),
        ("mean", (0.1, 0.2), "mean and std need 1 values"),
        ("class_names", ("only",), "at least 2 class names"),
        ("test_accuracy", 1.5, "test_accuracy must be in"),
        ("test_macro_f1", float("nan"), "test_macro_f1 must be in"),
    ],
)
def test_a_card_that_cannot_be_right_is_refused(field, value, message):
    with pytest.raises(ModelCardError, match=message):
        dataclasses.replace(CARD, **{field: value})


@pytest.mark.parametrize(("flip", "views"), [(True, 2), (False, 1)])
def test_a_card_packaged_before_shifts_existed_counts_its_views_by_the_flip(flip, views):
    stored = {**CARD.to_dict(), "test_time_flip": flip}
    del stored["test_time_views"]
    assert ModelCard.from_dict(stored).test_time_views == views
    assert CARD.test_time_views == 2
    assert dataclasses.replace(CARD, test_time_views=10).to_dict()["test_time_views"] == 10


@pytest.mark.parametrize("views", [-1, 3])
def test_a_view_count_that_cannot_be_right_is_refused(views):
    with pytest.raises(ModelCardError, match="test_time_views must be a positive count"):
        dataclasses.replace(CARD, test_time_views=views)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input_shape", ["28", "wide", "1"]),
        ("test_time_flip", "yes"),
        ("test_time_views", True),
        ("test_time_views", 2.5),
    ],
)
def test_mistyped_metadata_is_refused(field, value):
    stored = {**CARD.to_dict(), field: value}
    with pytest.raises(ModelCardError, match="not a model card"):
        ModelCard.from_dict(stored)


def _project_imports(path: Path) -> set[str]:
    """The `pipeline.*` and `serving.*` modules a file imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in ("pipeline", "serving")}
    return found


def _file_of(module: str) -> Path | None:
    for candidate in (module.replace(".", "/") + ".py", module.replace(".", "/") + "/__init__.py"):
        if (paths.PROJECT_ROOT / candidate).is_file():
            return paths.PROJECT_ROOT / candidate
    return None


def test_serving_imports_nothing_from_training():
    """Every project module the service reaches, import by import: serving/ and the shared
    modules, which import only the standard library, NumPy, Pillow, and Keras and TensorFlow
    (the test-time views' wrapper and the batch-norm fold), which the served model needs
    anyway."""
    reached, todo = set(), ["serving/service.py"]
    while todo:
        relative = todo.pop()
        if relative in reached:
            continue
        reached.add(relative)
        for module in _project_imports(paths.PROJECT_ROOT / relative):
            file = _file_of(module)
            if file is not None:
                todo.append(str(file.relative_to(paths.PROJECT_ROOT)))
    pipeline_files = {r for r in reached if r.startswith("pipeline/")}
    assert pipeline_files <= SHARED_MODULES, pipeline_files - SHARED_MODULES
    allowed = set(sys.stdlib_module_names) | {"numpy", "PIL", "pipeline", "keras", "tensorflow"}
    for relative in SHARED_MODULES:
        tree = ast.parse((paths.PROJECT_ROOT / relative).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                roots = (
                    [a.name.split(".")[0] for a in node.names]
                    if isinstance(node, ast.Import)
                    else [(node.module or "").split(".")[0]]
                )
                assert set(roots) <= allowed | {"__future__"}, (relative, roots)


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_the_bento_ships_the_shared_modules_and_no_training_module(bentofile):
    include = yaml.safe_load((paths.PROJECT_ROOT / bentofile).read_text())["include"]
    assert {p for p in include if p.startswith("pipeline/")} == SHARED_MODULES
