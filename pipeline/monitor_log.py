"""The service's monitoring log, read back: BentoML's JSON lines (serving/monitoring.py) as one
table, of one model, in one time window; a log that cannot be used stops in one line.

Nothing here writes to the log folder: reading it twice gives the same table.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.errors import PipelineError
from pipeline.features import MONITOR_NAME

#: A record's values per request, and per image (serving/monitoring.py writes both, in order).
REQUEST_COLUMNS = ("request", "answered", "latency_ms", "images")
IMAGE_COLUMNS = (
    "width",
    "height",
    "mode",
    "resized",
    "converted",
    "pixel_mean",
    "pixel_std",
    "near_white",
    "label",
    "confidence",
    "entropy",
)
#: Per image too, where the service kept pixel samples: each image's file name, or "".
SAMPLE_COLUMN = "pixel_sample"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class ServedLog:
    """The records of one model in the window, and what was left out of it."""

    records: pd.DataFrame
    files: list[Path]
    since: dt.datetime | None
    #: Lines that were not records, skipped (only with skip_bad_lines).
    bad_lines: int
    #: Records in the window of other models, by tag.
    other_models: dict[str, int]


def parse_since(raw: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """`--since`: a duration back from now (`90s`, `30m`, `12h`, `7d`, `2w`) or an ISO date or
    time (`2026-12-01`, `2026-12-01T08:00`), in the log's local time; None for all."""
    if raw is None or not raw.strip():
        return None
    raw = raw.strip()
    match = _DURATION.match(raw)
    if match:
        amount, unit = float(match.group(1)), match.group(2)
        return (now or dt.datetime.now()) - dt.timedelta(**{_UNITS[unit]: amount})
    try:
        since = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise PipelineError(
            f"--since {raw!r} is neither a duration (30m, 12h, 7d) nor a date or time "
            "(2026-12-01, 2026-12-01T08:00)"
        ) from None
    return since.astimezone().replace(tzinfo=None) if since.tzinfo else since


def data_files(logs: Path) -> list[Path]:
    """Every worker's data file under `logs`, rotated ones included, oldest first."""
    folder = logs / MONITOR_NAME / "data"
    files = sorted(p for p in folder.glob("data.*.log*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise PipelineError(
            f"no monitoring log in {folder}: serve the model first (monitoring is on by "
            "default), or point monitor.logs at the service's monitoring folder"
        )
    return sorted(files, key=lambda p: p.stat().st_mtime)


def _images(line: str) -> list[dict] | str:
    """The image rows of the record on `line` (one per image, with its request's values), or
    why it is not a record of this service."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        return f"not JSON ({exc.msg.lower()} at column {exc.colno})"
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [c for c in ("model_tag", *REQUEST_COLUMNS, *IMAGE_COLUMNS) if c not in record]
    if missing:
        return f"lacks {', '.join(missing[:3])}"
    if any(not isinstance(record[c], list) for c in (*REQUEST_COLUMNS, *IMAGE_COLUMNS)):
        return "a per-request or per-image value is not a list"
    counts = record["images"]
    if len({len(record[c]) for c in REQUEST_COLUMNS}) != 1 or not all(
        isinstance(n, int) and n > 0 for n in counts
    ):
        return "its per-request lists do not match"
    if {len(record[c]) for c in IMAGE_COLUMNS} != {sum(counts)}:
        return f"its per-image lists do not hold the {sum(counts)} images its requests say"
    per_image = [*IMAGE_COLUMNS]
    if len(record.get(SAMPLE_COLUMN) or []) == sum(counts):
        per_image.append(SAMPLE_COLUMN)
    rows = []
    at = 0
    for i, n in enumerate(counts):
        request = {c: record[c][i] for c in REQUEST_COLUMNS}
        for j in range(at, at + n):
            rows.append(
                {
                    "model_tag": record["model_tag"],
                    **request,
                    **{c: record[c][j] for c in per_image},
                }
            )
        at += n
    return rows


def read_log(
    logs: Path,
    model_tag: str,
    since: dt.datetime | None = None,
    skip_bad_lines: bool = False,
) -> ServedLog:
    """The records of `model_tag` at or after `since` under the monitoring folder `logs`."""
    files = data_files(logs)
    rows, bad = [], 0
    for path in files:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = _images(line)
                if isinstance(record, str):
                    if not skip_bad_lines:
                        raise PipelineError(
                            f"{path} line {number} is not a monitoring record: {record}; "
                            "fix or remove it, or pass --skip-bad-lines to leave such lines out"
                        )
                    bad += 1
                    continue
                rows += record
    if not rows:
        raise PipelineError(f"the monitoring log in {files[0].parent} holds no records yet")
    table = pd.DataFrame(rows)
    try:
        table["answered"] = pd.to_datetime(table["answered"], format="ISO8601")
        for column in ("pixel_mean", "pixel_std", "near_white", "confidence", "entropy"):
            table[column] = pd.to_numeric(table[column], errors="raise")
        table["latency_ms"] = pd.to_numeric(table["latency_ms"], errors="raise")
    except (ValueError, TypeError) as exc:
        raise PipelineError(
            f"the monitoring log in {files[0].parent} has a record with a bad value: {exc}; "
            "was it written by another service?"
        ) from None
    if since is not None:
        table = table[table["answered"] >= pd.Timestamp(since)]
        if table.empty:
            raise PipelineError(
                f"no records since {since:%Y-%m-%d %H:%M:%S} in {files[0].parent}; "
                "choose an earlier --since"
            )
    counts = table["model_tag"].value_counts()
    if model_tag not in counts:
        found = ", ".join(f"{tag} ({n} images)" for tag, n in counts.items())
        raise PipelineError(
            f"the log holds no records of {model_tag} in this window, only of {found}: pass "
            f"monitor.model=<one of those> to compare its records with its own reference"
        )
    others = {str(tag): int(n) for tag, n in counts.items() if tag != model_tag}
    mine = table[table["model_tag"] == model_tag].reset_index(drop=True)
    return ServedLog(mine, files, since, bad, others)
