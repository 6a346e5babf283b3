"""Our service against MLflow's own scoring server on the same model, in one run.

`mlflow models serve -m models:/NAME/VERSION --env-manager local` is what an MLflow user would
run instead of this service. Both servers run at once, idle while the other is measured; for
each concurrency and repeat the two take turns. Both get the same Fashion-MNIST test images
as JSON (ours at `/classify_array`, theirs as `{"inputs": ...}`); ours is also measured with
the same images as PNG uploads (`/classify`).
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

from bench.processes import ServerProcess
from bench.serving import Body, Server, load, request_bodies, workdir
from pipeline import paths
from pipeline.model_card import ModelCard

CONCURRENCY = (1, 32)
REPEATS = 2
#: MLflow's server needs ~14 s for one 64-image request at 32 clients here; a short run would
#: end before any request finishes.
DURATION_S = {1: 10, 64: 30}


class MlflowServer(ServerProcess):
    """`mlflow models serve` of `model_uri` on 127.0.0.1, on the project's tracking store."""

    def __init__(self, model_uri: str, tracking_uri: str) -> None:
        venv_bin = paths.BIN_DIR
        env = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            # It execs `uvicorn`, which must be on PATH.
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        command = [str(venv_bin / "mlflow"), "models", "serve", "-m", model_uri]
        command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", "{port}"]
        super().__init__(command, env, "/ping")


def _mlflow_bodies(work: Path, ours: dict[str, Body]) -> dict[str, Body]:
    """The images of our JSON bodies, as MLflow's scoring protocol wants them (N x H x W x 1)."""
    out = {}
    for name in ("array x1", "array x64"):
        pixels = json.loads(ours[name].path.read_text())["pixels"]
        path = work / f"mlflow_{name.replace(' ', '_')}"
        path.write_text(
            json.dumps({"inputs": [[[[v] for v in row] for row in img] for img in pixels]})
        )
        out[name.replace("array", "json")] = Body(
            path, "application/json", len(pixels), "/invocations"
        )
    return out


def run(model_tag: str) -> list[dict]:
    """One row per (server, request, concurrency): medians over the repeats."""
    import bentoml

    from pipeline import tracking
    from pipeline.config import TrackingConfig

    card = ModelCard.from_dict(bentoml.models.get(model_tag).info.metadata)
    model_uri = f"models:/{card.registered_model}/{card.registry_version}"
    work = workdir()
    ours = request_bodies(work)
    theirs = _mlflow_bodies(work, ours)
    cases = [
        ("this service", "classify x1 (PNG)", ours["classify x1"]),
        ("this service", "classify x64 (PNG)", ours["classify x64"]),
        ("this service", "JSON x1", ours["array x1"]),
        ("this service", "JSON x64", ours["array x64"]),
        ("mlflow models serve", "JSON x1", theirs["json x1"]),
        ("mlflow models serve", "JSON x64", theirs["json x64"]),
    ]
    rows = []
    servers = {
        "this service": Server(model_tag),
        "mlflow models serve": MlflowServer(model_uri, tracking.tracking_uri(TrackingConfig())),
    }
    try:
        for concurrency in CONCURRENCY:
            runs: dict[tuple[str, str], list[dict]] = {(s, r): [] for s, r, _ in cases}
            for repeat in range(REPEATS):
                for server, request, body in cases if repeat % 2 == 0 else cases[::-1]:
                    runs[(server, request)].append(
                        load(
                            servers[server].url,
                            body,
                            concurrency,
                            work,
                            duration_s=DURATION_S[body.images],
                        )
                    )
            for server, request, body in cases:
                done = runs[(server, request)]
                rps = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in done)
                rows.append(
                    {
                        "server": server,
                        "request": request,
                        "concurrency": concurrency,
                        "requests_per_s": rps,
                        "images_per_s": rps * body.images,
                        "p50_ms": statistics.median(r["p50_us"] for r in done) / 1000,
                        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in done),
                        "requests": sum(r["requests"] for r in done),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return rows


def render(rows: list[dict]) -> str:
    import pandas as pd

    df = pd.DataFrame(rows)
    theirs = df[df.server == "mlflow models serve"].set_index(["request", "concurrency"])
    df["ours / mlflow, same JSON"] = df.apply(
        lambda r: (
            r.requests_per_s / theirs.loc[(r.request, r.concurrency), "requests_per_s"]
            if r.server == "this service" and r.request.startswith("JSON")
            else float("nan")
        ),
        axis=1,
    )
    ratio = df.set_index(["server", "request", "concurrency"])["ours / mlflow, same JSON"]
    cell = lambda v: "" if v != v else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")  # noqa: E731
    return f"""## Against MLflow's scoring server

`bench/peer.py`. `mlflow models serve -m models:/NAME/VERSION --env-manager local` of the same
registered model, beside this service (eager batcher, one worker), both on 127.0.0.1. Both get
the same Fashion-MNIST test images as JSON; ours also as PNG uploads. For each concurrency the
cases take turns, {REPEATS} repeats, {DURATION_S[1]} s per run ({DURATION_S[64]} s with 64
images, since one such request takes MLflow seconds); medians.

Aims: at least 20x MLflow's requests/s at 32 clients and at least 3x at 1 client. Same JSON,
one image: **{ratio[("this service", "JSON x1", 1)]:.1f}x** at 1 client, **{
        ratio[("this service", "JSON x1", 32)]:.1f}x** at 32; 64 images: **{
        ratio[("this service", "JSON x64", 1)]:.1f}x** at 1 client, **{
        ratio[("this service", "JSON x64", 32)]:.1f}x** at 32.

{df.map(lambda v: cell(v) if isinstance(v, float) else v).to_markdown(index=False)}
"""
