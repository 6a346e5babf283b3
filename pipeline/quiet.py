"""Keep TensorFlow's known, harmless native log lines off the `pipeline` command's stderr.

TensorFlow's C++ code writes some lines straight to file descriptor 2, before and regardless of
`TF_CPP_MIN_LOG_LEVEL`. On a machine without a GPU, `make train` printed
`E0000 ... failed call to cuInit: ... UNKNOWN ERROR (303)` and an E-level line about the
`use_unbounded_threadpool` attribute on every run, which read as failures and were not.
`filter_native_stderr` routes descriptor 2 through a pipe and a thread that drops the lines
listed in `KNOWN_NOISE` and passes everything else through unchanged, Python's own output
included. `PIPELINE_NATIVE_LOGS=1` turns the filter off.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading
from pathlib import Path


def _no_gpu_device() -> bool:
    return not any(Path("/dev").glob("nvidia[0-9]*"))


#: (pattern, when it is noise). cuInit failing is only expected where no NVIDIA device exists.
KNOWN_NOISE: tuple[tuple[re.Pattern[str], object], ...] = (
    (re.compile(r"failed call to cuInit"), _no_gpu_device),
    (re.compile(r"Could not find cuda drivers on your machine"), _no_gpu_device),
    # A graph attribute newer than the op registry of the same TF build: TF ignores it.
    (re.compile(r"NodeDef mentions attribute use_unbounded_threadpool"), lambda: True),
    (re.compile(r"^WARNING: All log messages before absl::InitializeLog"), lambda: True),
    (re.compile(r"oneDNN custom operations are on"), lambda: True),
)


def is_noise(line: str) -> bool:
    return any(pattern.search(line) and applies() for pattern, applies in KNOWN_NOISE)


def filter_native_stderr() -> None:
    """Filter descriptor 2 for the rest of the process (see the module's doc)."""
    if os.environ.get("PIPELINE_NATIVE_LOGS") == "1":
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as pipe, os.fdopen(terminal, "wb", buffering=0) as out:
            for raw in pipe:
                if not is_noise(raw.decode("utf-8", errors="replace")):
                    out.write(raw)

    thread = threading.Thread(target=pump, name="stderr-filter", daemon=True)
    thread.start()
    restore = os.dup(terminal)

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(restore, 2)  # closes the pipe's last write end: the pump reads to its end
        thread.join(timeout=5)

    atexit.register(drain)
