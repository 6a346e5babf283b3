"""What a run ran on: CPU fields, the first GPU, package versions, the commit. Read by the run
tags, `precision: auto` (pipeline/precision.py) and the benchmarks; imports no MLflow."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pipeline import paths

#: Packages whose versions are logged with each run and pinned in the logged model, besides
#: the running backend's own (`BACKEND_PACKAGES`).
TRACKED_PACKAGES = ("keras", "mlflow", "numpy", "scikit-learn", "pandas")
#: The packages of each Keras backend.
BACKEND_PACKAGES = {"tensorflow": ("tensorflow",), "jax": ("jax", "jaxlib")}


def installed_versions() -> dict[str, str]:
    """{package: version} of the running backend's packages and `TRACKED_PACKAGES`, those
    installed: what a run ran with, not all that the machine holds."""
    import keras

    found = {}
    for package in (*BACKEND_PACKAGES.get(keras.backend.backend(), ()), *TRACKED_PACKAGES):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


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
    """The first GPU the running Keras backend sees: its name and compute capability (a
    tuple), or None."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        gpus = [d for d in jax.devices() if d.platform == "gpu"]
        if not gpus:
            return None
        capability = getattr(gpus[0], "compute_capability", "0.0")  # "9.0" on an H200
        return {
            "device_name": gpus[0].device_kind,
            "compute_capability": tuple(int(part) for part in str(capability).split(".")),
        }
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
    """The first GPU the backend sees, or None."""
    details = first_gpu_details()
    return details["device_name"] if details else None


def device_name() -> str:
    gpu = gpu_name()
    return f"GPU: {gpu}" if gpu else f"CPU: {cpu_model()}"


def environment_tags() -> dict[str, str]:
    """Tags for an MLflow run: package versions, device, Python and the git commit."""
    return {
        **{f"version.{p}": v for p, v in installed_versions().items()},
        "device": device_name(),
        "python": platform.python_version(),
        "mlflow.source.git.commit": git_commit(),
    }
