"""Project paths, computed once here and nowhere else (no work at import time beyond this)."""

import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
CONFIG_DIR = PROJECT_ROOT / "configs"
DOCS_DIR = PROJECT_ROOT / "docs"
#: Embedded MLflow store: a SQLite file (its artifacts go beside it, in `mlartifacts/`;
#: pipeline/tracking.py), both git-ignored.
MLFLOW_DB = PROJECT_ROOT / "mlflow.db"
#: Per-run training checkpoints that make an interrupted `make train` resumable.
CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"
#: Debian's dataset packages install here (for example `dataset-fashion-mnist`).
SYSTEM_DATASETS = Path("/usr/share/datasets")
#: Where this interpreter's console scripts are (`pipeline`, `bentoml`, `mlflow`): the
#: virtual environment's `bin/` when it runs from one. Not resolved: a venv's python is a link.
BIN_DIR = Path(sys.executable).parent
