"""What the service sees, logged per image with BentoML's monitoring API (`bentoml.monitor`).

Each answered request adds one record per image to the monitor `cnn_classifier`: the image's
summary features (pipeline/features.py: pixel mean, std, near-white fraction), what it was
before it became model input (its size and mode, whether it was resized or converted), the
answer (top-1 label, its probability, the entropy) and the request's latency. `pipeline
monitor` compares these records with the model's reference profile (pipeline/drift.py).

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

import collections
import functools
import logging
import logging.handlers
import random
import sys
import time
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
from PIL import Image

from pipeline.features import MONITOR_NAME, answer_features, default_log_path, pixel_features
from pipeline.preprocess import ImageShape
from serving.decoding import Source

#: BentoML's monitoring options the service is declared with (SERVICE_OPTIONS): the log under
#: the BentoML home (as the model store), rotated by serving/monitoring_log.yaml.
LOG_CONFIG = Path(__file__).with_name("monitoring_log.yaml")
#: Images the live panel and the rolling confidence gauge look back over, per worker.
LIVE_WINDOW = 500
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
        "dropped": prometheus_client.Counter(
            "cnn_monitoring_records_dropped",
            "Monitoring records (or pixel samples) that could not be written, such as on a "
            "full disk; their requests were answered all the same",
        ),
    }


def _dropped(what: str, error: object = None) -> None:
    """Count a record that was not written; say so in the log the first time only."""
    _metrics()["dropped"].inc()
    if not _warned:
        _warned.append(what)
        _log.warning("monitoring: %s could not be written (%s); counting the rest", what, error)


_warned: list[str] = []


class LogFileHandler(logging.handlers.RotatingFileHandler):
    """The monitor's log file (serving/monitoring_log.yaml): rotated at `maxBytes`, keeping
    `backupCount` older files. A record it cannot write is dropped and counted, and only the
    first failure is reported: logging's default prints a traceback for every record."""

    def handleError(self, record: logging.LogRecord) -> None:
        _dropped("a monitoring record", sys.exc_info()[1])

    def close(self) -> None:
        """Close even when the records still buffered cannot be written (a full disk)."""
        try:
            super().close()
        except OSError as exc:
            _dropped("the monitoring log's last records", exc)


class LiveWindow:
    """The last `size` answers of this worker: their class mix and mean confidence."""

    def __init__(self, classes: int, size: int = LIVE_WINDOW) -> None:
        self.answers: collections.deque[tuple[int, float]] = collections.deque(maxlen=size)
        self.counts = np.zeros(classes, dtype=np.int64)
        self.total = 0.0

    def add(self, labels: np.ndarray, confidences: np.ndarray) -> None:
        for label, confidence in zip(labels.tolist(), confidences.tolist(), strict=True):
            if len(self.answers) == self.answers.maxlen:
                old_label, old_confidence = self.answers[0]
                self.counts[old_label] -= 1
                self.total -= old_confidence
            self.answers.append((label, confidence))
            self.counts[label] += 1
            self.total += confidence

    @property
    def mean_confidence(self) -> float | None:
        return self.total / len(self.answers) if self.answers else None

    def confidences(self) -> list[float]:
        return [confidence for _, confidence in self.answers]


class Monitor:
    """Logs each answered request (`record`) and keeps the live window; see the module."""

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
        with bentoml.monitor(MONITOR_NAME) as monitor:
            # BentoML's stand-in when its configuration turns monitoring off: nothing is
            # logged, counted or kept then.
            self.enabled = type(monitor).__name__ != "NoOpMonitor"
            log_path = getattr(monitor, "log_path", None)
        self.samples = (
            PixelSamples(Path(log_path) / MONITOR_NAME / "pixels", shape, pixel_sample_rate)
            if self.enabled and pixel_sample_rate > 0 and log_path
            else None
        )

    def record(
        self,
        pixels: np.ndarray,
        probabilities: np.ndarray,
        sources: list[Source] | None,
        started: float,
    ) -> None:
        """Log one answered request: (N, H, W, C) model input and (N, classes) answers;
        `sources` None for the array endpoints. Never raises."""
        if not self.enabled:
            return
        try:
            self._record(pixels, probabilities, sources, started)
        except Exception as exc:  # a request never fails for its log
            _dropped("a request's monitoring record", exc)

    def _record(self, pixels, probabilities, sources, started: float) -> None:
        latency_ms = round((time.perf_counter() - started) * 1000.0, 3)
        count = len(pixels)
        if sources is None:
            sources = [Source(self.shape.width, self.shape.height, "array")] * count
        image = pixel_features(pixels)
        answer = answer_features(probabilities)
        labels = answer["label"]
        self.window.add(labels, answer["confidence"])
        metrics = _metrics()
        for label, n in zip(*np.unique(labels, return_counts=True), strict=True):
            metrics["predictions"].labels(self.class_names[label]).inc(int(n))
        metrics["confidence"].set(self.window.mean_confidence)
        sampled = self.samples.maybe_write(pixels) if self.samples is not None else [""] * count
        size = (self.shape.width, self.shape.height)
        columns: list[tuple[str, str, str, list]] = [
            ("model_tag", "feature", "categorical", [self.model_tag] * count),
            ("image", "feature", "numerical", list(range(count))),
            ("width", "feature", "numerical", [s.width for s in sources]),
            ("height", "feature", "numerical", [s.height for s in sources]),
            ("mode", "feature", "categorical", [s.mode for s in sources]),
            ("resized", "feature", "categorical", [(s.width, s.height) != size for s in sources]),
            (
                "converted",
                "feature",
                "categorical",
                [s.mode not in (self.mode, "array") for s in sources],
            ),
            *(
                (name, "feature", "numerical", [round(float(v), 4) for v in image[name]])
                for name in ("pixel_mean", "pixel_std", "near_white")
            ),
            ("label", "prediction", "categorical", [self.class_names[i] for i in labels]),
            ("confidence", "prediction", "numerical", _rounded(answer["confidence"])),
            ("entropy", "prediction", "numerical", _rounded(answer["entropy"])),
            ("latency_ms", "feature", "numerical", [latency_ms] * count),
            ("pixel_sample", "feature", "categorical", sampled),
        ]
        with bentoml.monitor(MONITOR_NAME) as monitor:
            for name, role, kind, values in columns:
                monitor.log_batch(values, name, role, kind)

    def live(self, reference: dict[str, Any] | None) -> dict[str, Any]:
        """The live panel's data: this worker's last answers beside the training reference."""
        window = self.window
        return {
            "enabled": self.enabled,
            "window": window.answers.maxlen,
            "images": len(window.answers),
            "class_names": self.class_names,
            "class_counts": window.counts.tolist(),
            "mean_confidence": window.mean_confidence,
            "confidences": window.confidences(),
            "reference": reference,
        }


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in values]


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
