"""What the machine has: CPU fields and the first GPU, read by the run tags and `precision: auto`.

Kept apart from pipeline/environment.py so that the service can use it without MLflow."""

from __future__ import annotations

from pathlib import Path


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
