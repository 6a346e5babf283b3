"""Floods of large images, and `/livez` and `/readyz` timed from a process of its own, as an
orchestrator's probes would: each probe a new connection, one every 10 ms, the two paths in
turn. `python -m bench.health_probe PORT SECONDS` prints each probe's latency in ms on a line
of its own (or `error: ...`) until the time is up or it is stopped.

A process of its own, because a probe in the process that also sends the load measures that
process's GIL: the 16 threads of the decode-flood test held an in-process probe for 0.2-0.3 s
while the server answered within tens of milliseconds.
"""

from __future__ import annotations

import io
import socket
import subprocess
import sys
import time

from PIL import Image

PATHS = ("/livez", "/readyz")


def probe(port: int, path: str, timeout_s: float = 30.0) -> float:
    """Seconds for one GET of `path` on a new connection; raises unless it answers 200."""
    request = f"GET {path} HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n".encode()
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"{path} answered {answer[:60]!r}")
    return time.perf_counter() - start


def main() -> None:
    port, seconds = int(sys.argv[1]), float(sys.argv[2])
    end = time.perf_counter() + seconds
    turn = 0
    while time.perf_counter() < end:
        turn += 1
        try:
            print(f"{1000 * probe(port, PATHS[turn % len(PATHS)]):.2f}", flush=True)
        except (OSError, RuntimeError) as exc:
            print(f"error: {exc}", flush=True)
        time.sleep(0.01)


def read_probes(output: str) -> tuple[list[float], list[str]]:
    """(latencies in ms, errors) from what `main` printed."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error")]
    return [float(line) for line in lines if not line.startswith("error")], errors


class HealthProbe:
    """`main` in a subprocess for the duration of a `with` block; then `latencies_ms` and
    `errors` hold what it saw."""

    def __init__(self, port: int, max_seconds: float = 600) -> None:
        self.command = [sys.executable, "-m", "bench.health_probe", str(port), str(max_seconds)]
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []

    def __enter__(self) -> HealthProbe:
        from pipeline import paths

        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, text=True, cwd=paths.PROJECT_ROOT
        )
        time.sleep(0.3)  # its interpreter starts before the load does
        return self

    def __exit__(self, *exc_info) -> None:
        self.proc.terminate()
        output, _ = self.proc.communicate(timeout=30)
        self.latencies_ms, self.errors = read_probes(output)


if __name__ == "__main__":
    main()


def large_png() -> bytes:
    """A 1990 x 1990 RGBA PNG (4 megapixels) that compresses to a few kB: cheap to send,
    about 0.1 s to decode here."""
    image = Image.new("RGBA", (1990, 1990), (90, 90, 90, 255))
    image.paste((200, 200, 200, 128), (500, 500, 1500, 1500))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
