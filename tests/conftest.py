"""Shared fixtures: real Fashion-MNIST, a temporary MLflow store and BentoML home, one sweep.

BENTOML_HOME is set before anything imports bentoml, so tests never touch the user's stores.
`make test-fast` sets CNN_ZOO_FAST=1: its tests must need neither the system dataset nor the
session sweep, and a fast test that asks for either fails instead of quietly waiting on it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="cnn-zoo-tests-"))
os.environ["BENTOML_HOME"] = str(_SESSION_DIR / "bentoml")
os.environ["BENTOML_DO_NOT_TRACK"] = "True"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("SERVING_API_TOKEN", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from pipeline import paths  # noqa: E402
from tests.helpers import quick_overrides  # noqa: E402

FAST = os.environ.get("CNN_ZOO_FAST") == "1"
if FAST:  # no dataset on disk for the fast tier: a test that loads one fails
    paths.SYSTEM_DATASETS = _SESSION_DIR / "no-system-datasets"
    paths.DATA_DIR = _SESSION_DIR / "no-data"


#: Module-level marks that keep a whole test module out of the fast tier.
_NOT_FAST = ("pytestmark = pytest.mark.slow", "pytestmark = pytest.mark.dataset")


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:
    """The fast tier does not import the modules it would deselect whole: their imports (the
    server and tracking suites') were a quarter of its time."""
    if FAST and collection_path.suffix == ".py" and collection_path.name.startswith("test_"):
        text = collection_path.read_text()
        if any(mark in text.splitlines() for mark in _NOT_FAST):
            return True
    return None


def _not_in_fast_tier(what: str) -> None:
    if FAST:
        pytest.fail(f"a fast test asked for {what}; mark it slow or give it its own small data")


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def fashion():
    """The real Fashion-MNIST files as the pipeline loads them."""
    from pipeline.data import load_fashion_mnist

    _not_in_fast_tier("the system dataset")

    return load_fashion_mnist()


@pytest.fixture(scope="session")
def sweep(session_dir):
    """One quick sweep of two models, promoted: shared by training, selection and service tests."""
    from pipeline.config import load_config
    from pipeline.selection import promote
    from pipeline.sweep import train

    _not_in_fast_tier("the session sweep")
    store = session_dir / "mlflow"
    store.mkdir()
    # LeNet trains one epoch more than the rest: its own recipe must reach its run.
    config = load_config(
        paths.CONFIG_DIR / "quick.yaml", quick_overrides(store, "per_model.lenet.train.epochs=3")
    )
    result = train(config)
    promotion = promote(config.tracking, result.parent_run_id)
    return {"config": config, "result": result, "promotion": promotion, "store": store}


@pytest.fixture(scope="session")
def test_images(fashion) -> tuple[np.ndarray, np.ndarray]:
    """The first 32 real test images (uint8, 28x28x1) and their labels."""
    return fashion.x_test[:32], fashion.y_test[:32]
