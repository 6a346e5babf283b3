"""Helpers for the servers that benchmarks and tests start as subprocesses on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
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
