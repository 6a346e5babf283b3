"""Shared fixtures: real Fashion-MNIST, a temporary MLflow store and BentoML home, one sweep.

BENTOML_HOME is set before anything imports bentoml, so tests never touch the user's stores.
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

FASHION_DIR = paths.SYSTEM_DATASETS / "fashion-mnist"


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def fashion():
    """The real Fashion-MNIST files as the pipeline loads them."""
    from pipeline.data import load_fashion_mnist

    return load_fashion_mnist()


def quick_overrides(store: Path, *extra: str) -> list[str]:
    """The quick profile on a temporary store, small enough for CI."""
    return [
        f"tracking.tracking_uri=sqlite:///{store}/mlflow.db",
        f"tracking.checkpoint_dir={store}/checkpoints",
        *extra,
    ]


@pytest.fixture(scope="session")
def sweep(session_dir):
    """One quick sweep of two models, promoted: shared by training, selection and service tests."""
    from pipeline.config import load_config
    from pipeline.selection import promote
    from pipeline.train import train

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
