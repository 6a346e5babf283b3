"""A resumed run's checkpoint folder, checked before training resumes from it.

Keras' `BackupAndRestore` falls back to its previous weights file when the latest one cannot
be read, but a corrupt `training_metadata.json` or a truncated `best.weights.h5` (a disk that
filled up, a copy cut short) made every later resume of the sweep crash. `problem(folder)`
reads every file a resume will use and says what is wrong, so the sweep can train that model
again instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py

BACKUP = "backup"
BEST_WEIGHTS = "best.weights.h5"


def _read_all(path: Path) -> None:
    """Open an HDF5 weights file and read every array in it (a truncated file fails here)."""
    with h5py.File(path, "r") as f:

        def read(_: str, item) -> None:
            if isinstance(item, h5py.Dataset):
                item[()]

        f.visititems(read)


def problem(folder: Path) -> str | None:
    """What makes the checkpoint in `folder` unusable for a resume, or None if it is sound."""
    metadata = folder / BACKUP / "training_metadata.json"
    if metadata.exists():
        try:
            epoch = json.loads(metadata.read_text())["epoch"]
            if not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"epoch {epoch!r}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{metadata} is unreadable ({type(exc).__name__}: {exc})"
    latest = folder / BACKUP / "latest.weights.h5"
    weights = [latest] if latest.exists() else []
    if (folder / BEST_WEIGHTS).exists():
        weights.append(folder / BEST_WEIGHTS)
    for path in weights:
        try:
            _read_all(path)
        except (OSError, ValueError, KeyError) as exc:
            if path == latest and _previous_is_sound(latest):
                continue  # Keras restores the previous copy itself
            return f"{path} is unreadable ({type(exc).__name__}: {exc})"
    return None


def _previous_is_sound(latest: Path) -> bool:
    previous = latest.with_name(latest.name + ".bkp")
    try:
        _read_all(previous)
    except (OSError, ValueError, KeyError):
        return False
    return True
