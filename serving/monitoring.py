"""What the service sees, logged with BentoML's monitoring API (`bentoml.monitor`).

For each answered request it logs, with the monitor `cnn_classifier`: per image, its summary
features (pipeline/features.py: pixel mean, std, near-white fraction), what it was before it
became model input (its size and mode, whether it was resized or converted) and the answer
(top-1 label, its probability, the entropy); per request, its id, latency, image count and
when it was answered. The requests answered in each FLUSH_S go into one record, written off
the event loop (`Monitor`). `pipeline monitor` reads the records back per image
(pipeline/monitor_log.py) and compares them with the model's reference profile
(pipeline/drift.py).

- No raw pixels unless `SERVING_PIXEL_SAMPLES` asks for a fraction of them: those are written
  as PNG files into `pixels/` beside the log, a ring of files capped at `SAMPLE_BYTES`.
- The log rotates and is bounded (serving/monitoring_log.yaml, `LogFileHandler`). A record
  that cannot be written (a full disk) is dropped and counted on `/metrics`, never raised: a
  request never fails for its log.
- `/metrics` gains `cnn_predictions_total{label}` and `cnn_confidence_rolling_mean` (of the
  last `LIVE_WINDOW` images); the demo page's live panel reads `Monitor.live()`.

BentoML's own configuration turns monitoring off or moves its folder
(`services.cnn_classifier.monitoring` in BENTOML_CONFIG_OVERRIDES; serving/SERVICE.md).
"""

from __future__ import annotations

import atexit
import datetime
import functools
import logging
import logging.handlers
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from PIL import Image

from pipeline.features import (
    ANSWER_FEATURES,
    MONITOR_NAME,
    PIXEL_FEATURES,
    answer_features,
    default_log_path,
    pixel_features,
    rounded,
)
from pipeline.preprocess import ImageShape
from serving.decoding import Source
from serving.http import tracing

#: BentoML's monitoring options the service is declared with (SERVICE_OPTIONS): the log under
#: the BentoML home (as the model store), rotated by serving/monitoring_log.yaml.
LOG_CONFIG = Path(__file__).with_name("monitoring_log.yaml")
#: Images the live panel and the rolling confidence gauge look back over, per worker.
LIVE_WINDOW = 500
#: Seconds between writes of the queued records (serving/SERVICE.md: the log, and the live
#: panel and gauges, lag the answers by at most this).
FLUSH_S = 0.5
#: Images that may wait for the next write; past that (the writer stalled), records are
#: dropped and counted rather than held.
MAX_QUEUED_IMAGES = 65536
#: The most bytes of sampled pixels kept on disk (at the model's input size, uncompressed).
SAMPLE_BYTES = 64 * 1024 * 1024

_log = logging.getLogger(__name__)


def service_options() -> dict[str, Any]:
    """The `monitoring` entry of the service's configuration."""
    return {
        "monitoring": {
            "enabled": True,
            "type": "default",
            "options": {"log_path": str(default_log_path()), "log_config_file": str(LOG_CONFIG)},
        }
    }


@functools.cache
def _metrics():
    """Created on first use: BentoML sets PROMETHEUS_MULTIPROC_DIR after importing us."""
    import prometheus_client

    return {
        "predictions": prometheus_client.Counter(
            "cnn_predictions", "Images answered, by top-1 label", ["label"]
        ),
        "confidence": prometheus_client.Gauge(
            "cnn_confidence_rolling_mean",
            f"Mean top-1 probability of the last {LIVE_WINDOW} images a worker answered",
            multiprocess_mode="livemostrecent",
        ),
        "cpu": prometheus_client.Counter(
            "cnn_monitoring_write_cpu_seconds",
            "CPU time the monitoring writer thread spent on features, records and samples",
        ),
        "dropped": prometheus_client.Counter(
            "cnn_monitoring_images_dropped",
            "Answered images whose monitoring record could not be written, such as on a full "
            "disk; their requests were answered all the same",
        ),
    }


def _dropped(what: str, error: object = None, images: int = 0) -> None:
    """Count `images` whose record was not written; say so in the log the first time only."""
    if images:
        _metrics()["dropped"].inc(images)
    if not _warned:
        _warned.append(what)
        _log.warning("monitoring: %s could not be written (%s); counting the rest", what, error)


_warned: list[str] = []
#: Writes the log's handler could not make (it cannot raise: logging swallows its errors).
_failed_writes = [0]


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """The monitor's log file (serving/monitoring_log.yaml): rotated at `maxBytes`, keeping
    `backupCount` older files. A record it cannot write is dropped and counted, and only the
    first failure is reported: logging's default prints a traceback for every record."""

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        """Rotate once the file has reached `maxBytes`, judged from its size alone: the
        standard handler formats every record twice to measure it first."""
        if self.stream is None:
            self.stream = self._open()
        return self.maxBytes > 0 and self.stream.tell() >= self.maxBytes

    def handleError(self, record: logging.LogRecord) -> None:
        _failed_writes[0] += 1
        _dropped("a monitoring record", sys.exc_info()[1])

    def close(self) -> None:
        """Close even when the records still buffered cannot be written (a full disk)."""
        try:
            super().close()
        except OSError as exc:
            _dropped("the monitoring log's last records", exc)


class LiveWindow:
    """The last `size` answers of this worker: their class mix and mean confidence, kept in
    two NumPy rings (a write adds thousands of answers at once)."""

    def __init__(self, classes: int, size: int = LIVE_WINDOW) -> None:
        self.lock = threading.Lock()
        self.size = size
        self.classes = classes
        self.labels = np.zeros(size, dtype=np.int64)
        self.confidence = np.zeros(size, dtype=np.float64)
        self.filled = 0
        self.next = 0  # where the next answer goes

    def add(self, labels: np.ndarray, confidences: np.ndarray) -> None:
        labels, confidences = labels[-self.size :], confidences[-self.size :]
        at = (self.next + np.arange(len(labels))) % self.size
        self.labels[at], self.confidence[at] = labels, confidences
        self.next = (self.next + len(labels)) % self.size
        self.filled = min(self.size, self.filled + len(labels))

    @property
    def counts(self) -> np.ndarray:
        return np.bincount(self.labels[: self.filled], minlength=self.classes)

    @property
    def mean_confidence(self) -> float | None:
        return float(self.confidence[: self.filled].mean()) if self.filled else None


@dataclass(frozen=True)
class Answered:
    """One answered request, as `Monitor.record` keeps it until the next flush."""

    pixels: np.ndarray
    probabilities: np.ndarray
    sources: list[Source] | None
    latency_ms: float
    request_id: str
    #: When the answer was ready (seconds since the epoch).
    answered: float


class Monitor:
    """Logs the answered requests and keeps the live window; see the module.

    `record` only queues a request (microseconds, on the event loop, which is what bounds the
    service at one image per request); a thread writes what is queued every FLUSH_S seconds,
    the features of all its images computed at once, as one `bentoml.monitor` record with a
    value per request and a value per image in order.
    """

    def __init__(
        self,
        model_tag: str,
        class_names: list[str],
        shape: ImageShape,
        pixel_sample_rate: float = 0.0,
    ) -> None:
        self.model_tag = model_tag
        self.class_names = class_names
        self.shape = shape
        self.mode = "L" if shape.channels == 1 else "RGB"
        self.window = LiveWindow(len(class_names))
        self.pixel_sample_rate = pixel_sample_rate
        #: Whether BentoML's configuration has monitoring on: known at the first flush, from
        #: the monitor BentoML hands out (its stand-in when off: nothing is logged, counted or
        #: kept then). Asking before would log an empty record, which BentoML warns about.
        self.enabled: bool | None = None
        self.samples: PixelSamples | None = None
        self._queued: list[Answered] = []
        self._queued_images = 0
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._thread: threading.Thread | None = None
        # BentoML imports its monitoring API on first use, OpenTelemetry with it: at start-up,
        # not in the first write, which may come as the worker exits.
        self._bentoml_monitor = bentoml.monitor

    def record(
        self,
        pixels: np.ndarray,
        probabilities: np.ndarray,
        sources: list[Source] | None,
        started: float,
    ) -> None:
        """Queue one answered request: (N, H, W, C) model input and (N, classes) answers;
        `sources` None for the array endpoints. Never raises."""
        if self.enabled is False:
            return
        try:
            answered = Answered(
                pixels,
                probabilities,
                sources,
                round((time.perf_counter() - started) * 1000.0, 3),
                tracing.request_id(),
                time.time(),
            )
            with self._lock:
                if self._queued_images + len(pixels) > MAX_QUEUED_IMAGES:
                    _dropped("a request's record", "the log is falling behind", len(pixels))
                    return
                self._queued.append(answered)
                self._queued_images += len(pixels)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="monitoring", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
        except Exception as exc:  # a request never fails for its log
            _dropped("a request's monitoring record", exc, len(pixels))

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_S)
            self.flush()

    def flush(self) -> None:
        """Write what is queued now (the thread does, and the worker on its way out)."""
        with self._writing:
            with self._lock:
                batch, self._queued, self._queued_images = self._queued, [], 0
            if not batch:
                return
            started = time.thread_time()
            try:
                self._write(batch)
            except Exception as exc:  # a record lost, never the worker
                _dropped("a batch of monitoring records", exc, sum(len(a.pixels) for a in batch))
            finally:
                _metrics()["cpu"].inc(time.thread_time() - started)

    def _start(self, monitor) -> None:
        """On the first record: whether monitoring is on, and where pixel samples go."""
        self.enabled = type(monitor).__name__ != "NoOpMonitor"
        log_path = getattr(monitor, "log_path", None)  # the default monitor's folder
        if self.enabled and self.pixel_sample_rate > 0 and log_path:
            folder = Path(log_path) / MONITOR_NAME / "pixels"
            self.samples = PixelSamples(folder, self.shape, self.pixel_sample_rate)

    def _write(self, batch: list[Answered]) -> None:
        pixels = np.concatenate([a.pixels for a in batch])
        probabilities = np.concatenate([a.probabilities for a in batch])
        count = len(pixels)
        array = Source(self.shape.width, self.shape.height, "array")
        sources = [s for a in batch for s in (a.sources or [array] * len(a.pixels))]
        image = pixel_features(pixels)
        answer = answer_features(probabilities)
        labels = answer["label"]
        size = (self.shape.width, self.shape.height)
        per_request: list[tuple[str, list]] = [
            ("request", [a.request_id for a in batch]),
            ("answered", [_local_time(a.answered) for a in batch]),
            ("latency_ms", [a.latency_ms for a in batch]),
            ("images", [len(a.pixels) for a in batch]),
        ]
        per_image: list[tuple[str, str, list]] = [
            ("width", "feature", [s.width for s in sources]),
            ("height", "feature", [s.height for s in sources]),
            ("mode", "feature", [s.mode for s in sources]),
            ("resized", "feature", [(s.width, s.height) != size for s in sources]),
            ("converted", "feature", [s.mode not in (self.mode, "array") for s in sources]),
            *((name, "feature", rounded(name, image[name])) for name in PIXEL_FEATURES),
            ("label", "prediction", [self.class_names[i] for i in labels]),
            *((name, "prediction", rounded(name, answer[name])) for name in ANSWER_FEATURES),
        ]
        failed = _failed_writes[0]
        with self._bentoml_monitor(MONITOR_NAME) as monitor:
            if self.enabled is None:
                self._start(monitor)
            if not self.enabled:
                return
            monitor.log(self.model_tag, "model_tag", "feature", "categorical")
            for name, values in per_request:
                monitor.log(values, name, "feature", "numerical_sequence")
            for name, role, values in per_image:
                monitor.log(values, name, role, "numerical_sequence")
            sampled = self.samples.maybe_write(pixels) if self.samples else [""] * count
            monitor.log(sampled, "pixel_sample", "feature", "numerical_sequence")
        if _failed_writes[0] != failed:  # the handler could not write this record
            _dropped("a monitoring record", "see above", count)
        with self.window.lock:
            self.window.add(labels, answer["confidence"])
            mean = self.window.mean_confidence
        metrics = _metrics()
        for label, n in zip(*np.unique(labels, return_counts=True), strict=True):
            metrics["predictions"].labels(self.class_names[label]).inc(int(n))
        metrics["confidence"].set(mean)

    def live(self, reference: dict[str, Any] | None) -> dict[str, Any]:
        """The live panel's data: this worker's last answers beside the training reference
        (as of the last flush, at most FLUSH_S old)."""
        window = self.window
        with window.lock:
            return {
                "enabled": self.enabled,
                "window": window.size,
                "images": window.filled,
                "class_names": self.class_names,
                "class_counts": window.counts.tolist(),
                "mean_confidence": window.mean_confidence,
                "reference": reference,
            }


def _local_time(seconds: float) -> str:
    """ISO local time, as BentoML stamps its records."""
    return datetime.datetime.fromtimestamp(seconds).isoformat()


class PixelSamples:
    """A sampled fraction of the model inputs as PNG files in `folder`: a ring of at most
    SAMPLE_BYTES of pixels, the newest overwriting the oldest. Each worker has its own ring."""

    def __init__(
        self, folder: Path, shape: ImageShape, rate: float, budget_bytes: int = SAMPLE_BYTES
    ) -> None:
        worker = bentoml.server_context.worker_index or 0
        self.folder = folder
        self.prefix = f"w{worker}-"
        self.rate = rate
        self.capacity = max(1, budget_bytes // (shape.height * shape.width * shape.channels))
        self.written = 0
        self._random = random.Random()

    def maybe_write(self, pixels: np.ndarray) -> list[str]:
        """Per image, the file name it was written to, or "" where it was not sampled."""
        names = []
        for image in pixels:
            if self._random.random() >= self.rate:
                names.append("")
                continue
            name = f"{self.prefix}{self.written % self.capacity:06d}.png"
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
                    self.folder / name
                )
            except OSError as exc:
                _dropped("a pixel sample", exc)
                names.append("")
                continue
            self.written += 1
            names.append(name)
        return names
