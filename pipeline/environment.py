"""What a run ran on: CPU fields, the first GPU, package versions, the commit. Read by the run
tags, `precision: auto` (pipeline/precision.py) and the benchmarks; imports no MLflow."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import version
from pathlib import Path

from pipeline import paths

#: Packages whose versions are logged with each run and pinned in the logged model.
TRACKED_PACKAGES = ("tensorflow", "keras", "mlflow", "numpy", "scikit-learn", "pandas")


def cpuinfo_field(key: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first CPU's `key` line, or None where there is no such file or line."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def first_gpu_details() -> dict | None:
    """TensorFlow's details of the first GPU it sees (name, compute capability), or None."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    return {"device_name": gpus[0].name, **tf.config.experimental.get_device_details(gpus[0])}


def git_commit() -> str:
    """The commit of the project checkout, or 'unknown' outside git."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=paths.PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_model() -> str:
    return cpuinfo_field("model name") or platform.processor() or platform.machine()


def gpu_name() -> str | None:
    """The first GPU TensorFlow sees, or None."""
    details = first_gpu_details()
    return details["device_name"] if details else None


def device_name() -> str:
    gpu = gpu_name()
    return f"GPU: {gpu}" if gpu else f"CPU: {cpu_model()}"


def environment_tags() -> dict[str, str]:
    """Tags for an MLflow run: package versions, device, Python and the git commit."""
    return {
        **{f"version.{p}": version(p) for p in TRACKED_PACKAGES},
        "device": device_name(),
        "python": platform.python_version(),
        "mlflow.source.git.commit": git_commit(),
    }
