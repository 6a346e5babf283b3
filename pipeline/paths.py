"""Project paths, computed once here and nowhere else (no work at import time beyond this)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = PROJECT_ROOT / "data"
CONFIG_DIR = PROJECT_ROOT / "configs"
DOCS_DIR = PROJECT_ROOT / "docs"
#: Embedded MLflow store: a SQLite file plus an artifact folder, both git-ignored.
MLFLOW_DB = PROJECT_ROOT / "mlflow.db"
MLFLOW_ARTIFACTS = PROJECT_ROOT / "mlartifacts"
#: Per-run training checkpoints that make an interrupted `make train` resumable.
CHECKPOINT_DIR = PROJECT_ROOT / "checkpoints"
#: Debian's dataset packages install here (for example `dataset-fashion-mnist`).
SYSTEM_DATASETS = Path("/usr/share/datasets")
