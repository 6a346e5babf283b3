"""The serving requirements (CPU, and GPU on TensorFlow or JAX) agree with the project lock, so
`make setup GPU=1 [BACKEND=jax]` and the bentos run exactly the versions the tests ran; the GPU
files only add CUDA wheels."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline import paths

PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;]+)", re.M)


def pins(path: Path) -> dict[str, str]:
    return {
        name.lower().replace("_", "-"): version for name, version in PIN.findall(path.read_text())
    }


LOCK = pins(paths.PROJECT_ROOT / "requirements.lock")


#: Each serving requirements file and the backend it carries.
SERVING = {
    "requirements.txt": "tensorflow",
    "requirements-gpu.txt": "tensorflow",
    "requirements-gpu-jax.txt": "jax",
}


@pytest.mark.parametrize("name", SERVING)
def test_serving_pins_are_the_locked_versions(name):
    serving = pins(paths.PROJECT_ROOT / "serving" / name)
    assert SERVING[name] in serving and "bentoml" in serving and "keras" in serving
    differ = {p: (v, LOCK[p]) for p, v in serving.items() if p in LOCK and LOCK[p] != v}
    assert not differ, f"serving/{name} pins other versions than requirements.lock: {differ}"


def test_the_lock_holds_both_backends():
    assert {"tensorflow", "jax", "jaxlib", "keras"} <= set(LOCK)


@pytest.mark.parametrize("name", ["requirements-gpu.txt", "requirements-gpu-jax.txt"])
def test_gpu_requirements_only_add_cuda_wheels(name):
    extra = set(pins(paths.PROJECT_ROOT / "serving" / name)) - set(LOCK)
    cuda = ("nvidia-", "jax-cuda12-")
    assert extra and all(p.startswith(cuda) for p in extra), sorted(extra)


def test_jax_gpu_requirements_carry_no_tensorflow():
    assert "tensorflow" not in pins(paths.PROJECT_ROOT / "serving" / "requirements-gpu-jax.txt")
