"""Serving throughput and latency under wrk (a load generator that costs the server little CPU).

Starts `bentoml serve` of the shipped service on 127.0.0.1 for the champion, beside the
benchmark's variants of it (bench/variants.py): `unbatched` (one model call per request) and
`noop` (the no-op endpoint, the HTTP path's own ceiling). It drives classify with 1 and with 64
PNG files per request, and the same 64 images decoded, as a JSON array and as a NumPy `.npy`
file, at several concurrencies, each server idle while another is measured.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.processes import ServerProcess
from pipeline import paths

CONCURRENCY = (1, 32, 64)
DURATION_S = 5
REPEATS = 3

WRK_SCRIPT = r"""
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""

#: The same, with a pause of BENCH_DELAY_MS before each request of a connection.
WRK_PACED_SCRIPT = (
    WRK_SCRIPT + 'local pause = tonumber(os.getenv("BENCH_DELAY_MS"))\n'
    "delay = function() return pause end\n"
)


def _multipart(files: list[bytes], field: str = "images", suffix: str = "png") -> tuple[bytes, str]:
    """A multipart body with each of `files` in `field`, and its Content-Type."""
    boundary = "benchboundary7f3a"
    kind = "image/png" if suffix == "png" else "application/octet-stream"
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{i}.{suffix}"\r\nContent-Type: {kind}\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def fashion_test_images(count: int):
    from pipeline.data import load_fashion_mnist

    return load_fashion_mnist().x_test[:count, ..., 0]


def as_pngs(images) -> list[bytes]:
    out = []
    for img in images:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def _peak_rss_mib(root_pid: int) -> dict[str, float]:
    """VmHWM (peak RSS) of every process under the server, keyed by its role."""
    import psutil

    peaks: dict[str, float] = {}
    for proc in psutil.Process(root_pid).children(recursive=True):
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            cmd = " ".join(proc.cmdline())
        except (OSError, psutil.Error):
            continue
        hwm = next((ln for ln in status.splitlines() if ln.startswith("VmHWM")), None)
        if hwm is None:
            continue
        role = "service worker" if "_bentoml_impl.worker.service" in cmd else "other"
        peaks[role] = max(peaks.get(role, 0.0), int(hwm.split()[1]) / 1024)
    return peaks


class Server(ServerProcess):
    """`bentoml serve` of the shipped service, or with `variant` of bench/variants.py, serving
    `model_tag`, with any further settings in `env`."""

    def __init__(
        self, model_tag: str, env: dict[str, str] | None = None, variant: str | None = None
    ) -> None:
        service = "bench.variants:Variant" if variant else "serving.service:Classifier"
        settings = {
            "BENCH_VARIANT": variant or "",
            "SERVING_MODEL": model_tag,
            "BENTOML_DO_NOT_TRACK": "True",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "SERVING_API_TOKEN": "",
            **(env or {}),
        }
        bentoml = str(paths.BIN_DIR / "bentoml")
        command = [bentoml, "serve", service, "--host", "127.0.0.1"]
        super().__init__([*command, "--port", "{port}"], settings, "/readyz")

    def worker(self):
        """The service worker (the process that holds the model), as a psutil.Process."""
        import psutil

        for proc in psutil.Process(self.proc.pid).children(recursive=True):
            if "_bentoml_impl.worker.service" in " ".join(proc.cmdline()):
                return proc
        raise RuntimeError("no service worker found under the server")

    def worker_rss_mib(self) -> float:
        """Resident memory of the service worker now."""
        return self.worker().memory_info().rss / 2**20


def wrk(
    url: str,
    body: Path,
    content_type: str,
    concurrency: int,
    script: Path,
    duration_s: float = DURATION_S,
    delay_ms: float = 0.0,
) -> dict:
    """One wrk run; `delay_ms` (with WRK_PACED_SCRIPT) is each connection's pause between
    requests, which paces the load below capacity."""
    threads = 1 if concurrency == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{duration_s}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        env={
            **os.environ,
            "BENCH_BODY": str(body),
            "BENCH_CONTENT_TYPE": content_type,
            "BENCH_DELAY_MS": str(delay_ms),
        },
        capture_output=True,
        text=True,
        timeout=duration_s + 60,
        check=True,
    ).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRK "))
    return json.loads(line[4:])


def _row(
    label: str, path: str, endpoint: str, concurrency: int, images: int, runs: list[dict]
) -> dict:
    rps = statistics.median(r["requests"] / (r["duration_us"] / 1e6) for r in runs)
    return {
        "model": label,
        "path": path,
        "endpoint": endpoint,
        "concurrency": concurrency,
        "requests_per_s": rps,
        "images_per_s": rps * images,
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p95_ms": statistics.median(r["p95_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "errors": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
    }


@dataclass(frozen=True)
class Body:
    """A request body on disk, what it holds and where it goes."""

    path: Path
    content_type: str
    images: int
    route: str


def workdir() -> Path:
    """A fresh folder holding the wrk scripts and the request bodies."""
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    (work / "post.lua").write_text(WRK_SCRIPT)
    (work / "paced.lua").write_text(WRK_PACED_SCRIPT)
    return work


def request_bodies(work: Path) -> dict[str, Body]:
    """No-op, 1 and 64 PNG uploads, and the same images decoded as JSON arrays (what a client
    that already holds pixels sends), written to `work`."""
    images = fashion_test_images(64)
    pngs = as_pngs(images)
    (work / "noop").write_bytes(b"{}")
    bodies = {"no-op": Body(work / "noop", "application/json", 0, "/noop")}
    for name, files in (("classify x1", pngs[:1]), ("classify x64", pngs)):
        data, content_type = _multipart(files)
        path = work / name.replace(" ", "_")
        path.write_bytes(data)
        bodies[name] = Body(path, content_type, len(files), "/classify")
    for name, count in (("array x1", 1), ("array x64", 64)):
        path = work / name.replace(" ", "_")
        path.write_text(json.dumps({"pixels": images[:count].tolist()}))
        bodies[name] = Body(path, "application/json", count, "/classify_array")
    buffer = io.BytesIO()
    np.save(buffer, images[..., None])  # uint8, as a client holding decoded pixels saves them
    data, content_type = _multipart([buffer.getvalue()], field="array", suffix="npy")
    (work / "npy_x64").write_bytes(data)
    bodies["npy x64"] = Body(work / "npy_x64", content_type, len(images), "/classify_npy")
    return bodies


def load(server_url: str, body: Body, concurrency: int, work: Path, **kwargs) -> dict:
    """wrk with `body` against the server; kwargs go to `wrk`."""
    script = work / ("paced.lua" if kwargs.get("delay_ms") else "post.lua")
    return wrk(server_url + body.route, body.path, body.content_type, concurrency, script, **kwargs)


#: The endpoints of the throughput table (array x1 is for the history and peer benchmarks).
ENDPOINTS = ("no-op", "classify x1", "classify x64", "array x64", "npy x64")
#: The paths measured: the shipped service, and the variant without merging.
PATHS = {"batched": None, "unbatched": "unbatched"}


def run(model_tag: str, label: str) -> dict:
    """Throughput rows of the champion `model_tag` (shown as `label`): each concurrency, the
    endpoints and paths in turns for REPEATS rounds, the no-op on its own variant server."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    work = workdir()
    bodies = request_bodies(work)
    servers = {"no-op": Server(model_tag, variant="noop")}
    try:
        for path, variant in PATHS.items():
            servers[path] = Server(model_tag, variant=variant)
        cases = [("no-op", "no-op")] + [
            (path, name) for path in PATHS for name in ENDPOINTS if name != "no-op"
        ]
        rows = []
        for concurrency in CONCURRENCY:
            runs: dict[tuple[str, str], list[dict]] = {case: [] for case in cases}
            for repeat in range(REPEATS):
                for server, name in cases if repeat % 2 == 0 else cases[::-1]:
                    url = servers[server].url
                    runs[(server, name)].append(load(url, bodies[name], concurrency, work))
            for (server, name), done in runs.items():
                for path in PATHS if server == "no-op" else (server,):
                    rows.append(_row(label, path, name, concurrency, bodies[name].images, done))
                    print(json.dumps(rows[-1]), flush=True)
        memory = {
            f"{label}, {name}": _peak_rss_mib(server.proc.pid) for name, server in servers.items()
        }
    finally:
        for server in servers.values():
            server.stop()
    return {"rows": rows, "memory": memory}
