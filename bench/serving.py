"""Serving throughput and latency under wrk (a load generator that costs the server little CPU).

Starts `bentoml serve` on 127.0.0.1 for each model given (the champion, and the LeNet the
issue's orientation figures used), batched and unbatched, and drives the no-op endpoint (the
HTTP ceiling), classify with 1 and with 64 PNG files per request, and the same 64 images as a
JSON array, at several concurrencies.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

from bench.processes import free_port, wait_until_ready
from pipeline import paths

CONCURRENCY = (1, 8, 32, 64)
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


def _multipart(images: list[bytes]) -> tuple[bytes, str]:
    boundary = "benchboundary7f3a"
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for i, data in enumerate(images)
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def _test_images(count: int):
    from pipeline.data import load_fashion_mnist

    return load_fashion_mnist().x_test[:count, ..., 0]


def _pngs(images) -> list[bytes]:
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


class Server:
    def __init__(self, batching: bool, model_tag: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "SERVING_BATCHING": "1" if batching else "0",
            "SERVING_MODEL": model_tag,
            "BENTOML_DO_NOT_TRACK": "True",
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        env.pop("SERVING_API_TOKEN", None)
        self.log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                str(paths.PROJECT_ROOT / ".venv/bin/bentoml"),
                "serve",
                "serving.service:Classifier",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=paths.PROJECT_ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_until_ready(f"{self.url}/readyz", self.proc, timeout_s=240):
            self.stop()
            raise RuntimeError(f"server did not start; see {self.log.name}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


def _wrk(url: str, body: Path, content_type: str, concurrency: int, script: Path) -> dict:
    threads = 1 if concurrency == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{DURATION_S}s",
            "--timeout",
            "30s",
            "-s",
            str(script),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(body), "BENCH_CONTENT_TYPE": content_type},
        capture_output=True,
        text=True,
        timeout=DURATION_S + 60,
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


def run(models: dict[str, str]) -> dict:
    """`models`: a label for each BentoML model tag to serve, e.g. {"champion (vgg)": tag}."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    images = _test_images(64)
    pngs = _pngs(images)
    (work / "noop").write_bytes(b"{}")
    bodies = {"no-op": (work / "noop", "application/json", 0, "/noop")}
    for name, files in (("classify x1", pngs[:1]), ("classify x64", pngs)):
        data, content_type = _multipart(files)
        (work / name.replace(" ", "_")).write_bytes(data)
        bodies[name] = (work / name.replace(" ", "_"), content_type, len(files), "/classify")
    # The same 64 images decoded, as JSON arrays: what a client that already holds pixels sends.
    (work / "array_x64").write_text(json.dumps({"pixels": images.tolist()}))
    bodies["array x64"] = (work / "array_x64", "application/json", 64, "/classify_array")

    rows, memory = [], {}
    for (label, tag), batching in itertools.product(models.items(), (True, False)):
        path = "batched" if batching else "unbatched"
        server = Server(batching, tag)
        try:
            for concurrency in CONCURRENCY:
                # Endpoints take turns within each repeat, so drift on a shared machine hits
                # the no-op ceiling and the classify figures it is compared with alike.
                runs: dict[str, list[dict]] = {n: [] for n in bodies}
                for _ in range(REPEATS):
                    for name in bodies:
                        body, content_type, _, route = bodies[name]
                        runs[name].append(
                            _wrk(server.url + route, body, content_type, concurrency, script)
                        )
                for name in bodies:
                    rows.append(_row(label, path, name, concurrency, bodies[name][2], runs[name]))
                    print(json.dumps(rows[-1]), flush=True)
            memory[f"{label}, {path}"] = _peak_rss_mib(server.proc.pid)
        finally:
            server.stop()
    return {"rows": rows, "memory": memory}
