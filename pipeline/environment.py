"""What a run ran on: CPU or GPU, package versions, commit. Shared by training and benchmarks."""

from __future__ import annotations

import platform
from importlib.metadata import version

from pipeline.hardware import cpuinfo_field, first_gpu_details

#: Packages whose versions are logged with each run and pinned in the logged model.
TRACKED_PACKAGES = ("tensorflow", "keras", "mlflow", "numpy", "scikit-learn", "pandas")


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
    from pipeline.tracking import git_commit

    return {
        **{f"version.{p}": version(p) for p in TRACKED_PACKAGES},
        "device": device_name(),
        "python": platform.python_version(),
        "mlflow.source.git.commit": git_commit(),
    }
