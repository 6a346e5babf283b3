"""Linux's /proc/cpuinfo, read by the run tags (CPU model) and by `precision: auto` (flags)."""

from __future__ import annotations

from pathlib import Path


def cpuinfo_field(key: str, cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first CPU's `key` line, or None where there is no such file or line."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
