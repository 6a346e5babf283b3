"""The serving requirements (CPU and GPU) agree with the project lock, so `make setup GPU=1` and
the bentos run exactly the versions the tests ran; the GPU file only adds CUDA wheels."""

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


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-gpu.txt"])
def test_serving_pins_are_the_locked_versions(name):
    serving = pins(paths.PROJECT_ROOT / "serving" / name)
    assert "tensorflow" in serving and "bentoml" in serving
    differ = {p: (v, LOCK[p]) for p, v in serving.items() if p in LOCK and LOCK[p] != v}
    assert not differ, f"serving/{name} pins other versions than requirements.lock: {differ}"


def test_gpu_requirements_only_add_cuda_wheels():
    extra = set(pins(paths.PROJECT_ROOT / "serving" / "requirements-gpu.txt")) - set(LOCK)
    assert extra and all(p.startswith("nvidia-") for p in extra), sorted(extra)
