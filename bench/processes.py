"""The processes benchmarks start: servers on 127.0.0.1, and one-line measurements."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    """Poll `url` until it answers 200; False if the process exits or the time runs out."""
    deadline = time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def measured(module: str, *args: str, timeout_s: int) -> dict:
    """Runs `python -m module *args` from the project root (a fresh process, since thread
    pools and determinism are process-wide) and returns the figures of its `BENCH` line."""
    from pipeline import paths

    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=paths.PROJECT_ROOT,
        timeout=timeout_s,
        check=True,
    )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH "))
    print(line, flush=True)
    return json.loads(line[6:])


class ServerProcess:
    """A server command run from the project root in its own process group, logging to a
    temporary file, waited for until `ready_path` answers 200; `stop()` ends the group."""

    def __init__(self, command: list[str], env: dict[str, str], ready_path: str) -> None:
        from pipeline import paths

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in command],
            cwd=paths.PROJECT_ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_until_ready(f"{self.url}{ready_path}", self.proc, timeout_s=240):
            self.stop()
            raise RuntimeError(f"{command[0]} did not start; see {self.log.name}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
