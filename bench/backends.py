"""TensorFlow against JAX on this machine, side by side in one run: training images/s of each
zoo model (configs/zoo.yaml's recipe, bench/training.py's `--backend` loop, a fresh process
per backend and model, the order of the two alternating model to model), and serving
requests/s of one PNG per request at 1 and 32 clients (wrk, the two servers in turns)."""

from __future__ import annotations

import os
import statistics

from bench import serving
from bench.processes import measured

MODELS = ("lenet", "vgg", "nin", "alexnet", "googlenet")
BACKENDS = ("tensorflow", "jax")
CONCURRENCY = (1, 32)
REPEATS = 3
ENDPOINT = "classify x1"


def training_rows() -> list[dict]:
    rows = []
    for index, name in enumerate(MODELS):
        order = BACKENDS if index % 2 == 0 else BACKENDS[::-1]
        for backend in order:
            os.environ["KERAS_BACKEND"] = backend  # for the measuring process only
            try:
                rows.append(measured("bench.training", name, "--backend", timeout_s=1800))
            finally:
                os.environ.pop("KERAS_BACKEND", None)
    return rows


def serving_rows(model_tag: str) -> list[dict]:
    work = serving.workdir()
    body = serving.request_bodies(work)[ENDPOINT]
    servers = {b: serving.Server(model_tag, {"KERAS_BACKEND": b}) for b in BACKENDS}
    try:
        rows = []
        for concurrency in CONCURRENCY:
            runs: dict[str, list[dict]] = {b: [] for b in BACKENDS}
            for repeat in range(REPEATS):
                for backend in BACKENDS if repeat % 2 == 0 else BACKENDS[::-1]:
                    runs[backend].append(
                        serving.load(servers[backend].url, body, concurrency, work)
                    )
            for backend, done in runs.items():
                row = serving._row(backend, "batched", ENDPOINT, concurrency, 1, done)
                rows.append({**row, "worker_rss_mib": servers[backend].worker_rss_mib()})
    finally:
        for server in servers.values():
            server.stop()
    return rows


def run(model_tag: str) -> dict:
    return {"training": training_rows(), "serving": serving_rows(model_tag)}


def ratios(raw: dict) -> dict[str, float]:
    """JAX over TensorFlow: per model's training images/s, and per client count's requests/s."""
    train = {(r["model"], r["backend"]): r["images_per_s"] for r in raw["training"]}
    serve = {(r["concurrency"], r["model"]): r["requests_per_s"] for r in raw["serving"]}
    out = {f"train {m}": train[(m, "jax")] / train[(m, "tensorflow")] for m in MODELS}
    for c in CONCURRENCY:
        out[f"serve {c} clients"] = serve[(c, "jax")] / serve[(c, "tensorflow")]
    out["train median"] = statistics.median(out[f"train {m}"] for m in MODELS)
    return out
