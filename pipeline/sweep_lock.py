"""One `pipeline train` per tracking store and configuration at a time.

Two sweeps of one configuration on one store would otherwise resume the same parent run,
train into the same nested runs and checkpoint folder, and log duplicated epochs, from which
the champion would then be chosen. The lock is an advisory `flock` on a file beside the
checkpoints: the operating system drops it when its process dies, so a killed sweep never
leaves a stale lock. It covers processes on one machine (or sharing the checkpoint folder).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError


class SweepBusyError(PipelineError):
    """Another process is running the same sweep on the same store."""


@contextlib.contextmanager
def sweep_lock(directory: Path, tracking_uri: str, sweep_key: str) -> Iterator[Path]:
    """Hold the lock of (`tracking_uri`, `sweep_key`) for the block, or raise SweepBusyError."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(f"{tracking_uri}\n{sweep_key}".encode()).hexdigest()[:16]
    path = directory / f"sweep-{digest}.lock"
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepBusyError(
                f"this sweep is already running on this tracking store ({holder}); wait for it "
                f"to finish, or stop it and run again to resume (lock: {path})"
            ) from None
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {started}")
        handle.flush()
        try:
            yield path
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
