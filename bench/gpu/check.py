"""The GPU proof's steps (bench/gpu/check.sh installs what they need, then runs this).

1. The machine: GPU, driver, JAX's devices and versions -> `$OUT/machine.json`.
2. `pipeline train --config configs/gpu.yaml` under JAX into a file-based MLflow store: the
   sweep, its evaluation and the champion's promotion and packaging -> `$OUT/train.log`.
3. `bentoml serve` of the champion with `SERVING_GPU=1`, and images/s at 1, 64 and 1,024
   images per request from concurrent clients -> `$OUT/serving.json`.
4. The store's runs, their metrics, params, tags and plots, without model weights ->
   `$OUT/gpu-runs.tar.gz`, which `pipeline results --gpu-runs` reads back.
5. If the call has time left (`TRADE_BEFORE_S`): the compile-time trade of
   `train.steps_per_execution`, VGG-11 for 2 epochs at 1 and at 16 steps per program, the
   first epoch holding the compile -> `$OUT/steps_per_execution.json`.

Eight files at most come back from a device call, and this writes eight at most. Each step
writes its file as soon as it ends, so a call cut short still returns what was done.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np

OUT = Path(os.environ.get("OUT", "/tmp/gpu-check-out"))
WORK = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu-check"))
#: Extra `key=value` overrides of configs/gpu.yaml (the dry run shrinks the sweep with them).
OVERRIDES = shlex.split(os.environ.get("GPU_CHECK_OVERRIDES", ""))
#: Seconds of load per request size.
SECONDS = float(os.environ.get("GPU_CHECK_SECONDS", "10"))
CLIENTS = int(os.environ.get("GPU_CHECK_CLIENTS", "8"))
SIZES = (1, 64, 1024)
#: Step 5 runs only if the call has used less than this many seconds by then.
TRADE_BEFORE_S = float(os.environ.get("GPU_CHECK_TRADE_BEFORE_S", "420"))
#: Files of the store left out of the tarball: weights and whole models, far over 16 MiB.
HEAVY = re.compile(r"\.(keras|h5|weights\.h5|pb|npz)$|/data/|/checkpoints/")


def write(name: str, value) -> None:
    (OUT / name).write_text(json.dumps(value, indent=2, default=str) + "\n")


def machine() -> dict:
    import jax

    query = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        smi = subprocess.run(["nvidia-smi", *query], capture_output=True, text=True).stdout
    except FileNotFoundError:  # the dry run, on a machine without a GPU
        smi = "no nvidia-smi"
    return {
        "nvidia_smi": smi.strip(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def train() -> tuple[str, float]:
    """The sweep and promotion; (the champion's BentoML model tag, seconds)."""
    command = [
        sys.executable, "-m", "pipeline.cli", "train", "--config", "configs/gpu.yaml",
        f"tracking.tracking_uri=file:{WORK / 'mlruns'}",
        f"tracking.checkpoint_dir={WORK / 'checkpoints'}",
        *OVERRIDES,
    ]  # fmt: skip
    start = time.perf_counter()
    with open(OUT / "train.log", "w") as log:
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    text = (OUT / "train.log").read_text()
    tags = re.findall(r"BentoML (\S+)\s*$", text, re.M)
    if code or not tags:
        raise SystemExit(f"the sweep failed (exit {code}); see train.log")
    return tags[-1], seconds


def serve(tag: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "SERVING_MODEL": tag,
        "SERVING_GPU": "1",
        "SERVING_MAX_IMAGES": str(max(SIZES)),
        "SERVING_MAX_BATCH_SIZE": str(max(SIZES)),
        "SERVING_MAX_REQUEST_BYTES": str(32 * 1024 * 1024),
    }
    command = [sys.executable, "-m", "bentoml", "serve", "serving.service:Classifier"]
    command += ["--host", "127.0.0.1", "--port", "3000"]
    log = open(OUT / "serve.log", "w")  # noqa: SIM115
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def ready(url: str, proc: subprocess.Popen, timeout_s: float = 300) -> bool:
    import httpx

    deadline = time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def npy(images: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, images)
    return buffer.getvalue()


def load(url: str, images: np.ndarray, size: int) -> dict:
    """CLIENTS threads posting `size` images a request to /classify_npy for SECONDS."""
    import httpx

    body = npy(images[:size])
    latencies: list[float] = []
    errors = [0]
    stop = time.perf_counter() + SECONDS
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300) as http:
            while time.perf_counter() < stop:
                start = time.perf_counter()
                answer = http.post("/classify_npy", files={"array": ("a.npy", body)})
                took = time.perf_counter() - start
                with lock:
                    if answer.status_code == 200:
                        latencies.append(took)
                    else:
                        errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ms = np.array(latencies) * 1000
    return {
        "images_per_request": size,
        "clients": CLIENTS,
        "requests": len(latencies),
        "errors": errors[0],
        "requests_per_s": round(len(latencies) / wall, 1),
        "images_per_s": round(len(latencies) * size / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
    }


def measure(tag: str) -> dict:
    import httpx

    from pipeline.data import load_fashion_mnist

    images = load_fashion_mnist().x_test[: max(SIZES)]
    proc = serve(tag)
    url = "http://127.0.0.1:3000"
    try:
        started = time.perf_counter()
        if not ready(url, proc):
            raise SystemExit("the server did not start; see serve.log")
        startup = time.perf_counter() - started
        info = httpx.post(f"{url}/metadata", json={}, timeout=30).json()
        rows = [load(url, images, size) for size in SIZES]
        after = httpx.post(f"{url}/metadata", json={}, timeout=30).json()
        return {
            "model": tag,
            "startup_seconds": round(startup, 1),
            "metadata": info,
            "compiles_after_start": after["compiles_after_start"],
            "rows": rows,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def pack(root: Path, tarball: Path) -> None:
    """The file store at `root` without weights, as one tarball holding `mlruns/`."""
    with tarfile.open(tarball, "w:gz") as tar:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not HEAVY.search(str(path.relative_to(root))):
                tar.add(path, arcname=str(Path("mlruns") / path.relative_to(root)))


def steps_per_execution_trade() -> dict:
    """VGG-11 as configs/gpu.yaml trains it, 2 epochs at 1 and at 16 steps per program."""
    import dataclasses

    from pipeline import training
    from pipeline.config import load_config
    from pipeline.data import load_splits

    config = load_config(Path("configs/gpu.yaml"), OVERRIDES).for_run("vgg")
    splits = load_splits(config.data, config.train.seed)
    rows = []
    for steps in (1, 16):
        train = dataclasses.replace(
            config.train, epochs=2, warmup_epochs=0, steps_per_execution=steps
        )
        prepared = training.prepare("vgg", dataclasses.replace(config, train=train), splits)
        seconds = training.fit(prepared, verbose=0).history["epoch_seconds"]
        rows.append(
            {
                "steps_per_execution": steps,
                "first_epoch_s": round(seconds[0], 2),
                "second_epoch_s": round(seconds[1], 2),
                "compile_s": round(seconds[0] - seconds[1], 2),
            }
        )
        print("steps_per_execution:", rows[-1], flush=True)
    return {"model": "vgg", "images": len(splits.y_train), "rows": rows}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    WORK.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("BENTOML_HOME", str(WORK / "bentoml"))
    began = time.perf_counter()
    summary: dict = {"machine": machine(), "overrides": OVERRIDES}
    write("machine.json", summary["machine"])
    print("machine:", summary["machine"], flush=True)
    try:
        tag, seconds = train()
        summary["sweep_seconds"] = round(seconds, 1)
        print(f"sweep: {seconds:.0f} s, champion {tag}", flush=True)
        pack(WORK / "mlruns", OUT / "gpu-runs.tar.gz")
        serving = measure(tag)
        write("serving.json", serving)
        for row in serving["rows"]:
            print("serving:", row, flush=True)
        used = time.perf_counter() - began
        if used < TRADE_BEFORE_S:
            write("steps_per_execution.json", steps_per_execution_trade())
        else:
            print(f"steps_per_execution trade skipped: {used:.0f} s used", flush=True)
    finally:
        summary["total_seconds"] = round(time.perf_counter() - began, 1)
        write("summary.json", summary)
    print(f"done in {summary['total_seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
