"""Serving settings: eleven `SERVING_*` environment variables, read once (a container takes -e).

Each field's comment is its entry in serving/SERVICE.md's settings table. What is not here is
either derived from these (the bytes in flight, the size limit of one image), fixed in the
module that uses it, or BentoML's own configuration (`workers`, the access log:
`BENTOML_CONFIG_OVERRIDES`, serving/SERVICE.md).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

#: The choices of `SERVING_VIEWS` (serving/model.py).
VIEWS = ("model", "flip", "one")
SWITCHES = {"on": True, "off": False}


@dataclass(frozen=True)
class Settings:
    #: `SERVING_MODEL`: the BentoML model tag to serve; `latest` is the newest champion.
    model_tag: str = "cnn-classifier:latest"
    #: `SERVING_API_TOKEN`: the bearer token every POST needs; unset, none.
    api_token: str | None = None
    #: `SERVING_GPU`: `1` asks BentoML for one GPU (the GPU bento sets it).
    gpu: bool = False
    #: `SERVING_MAX_BATCH_SIZE`: the most images in one model call, merged from concurrent
    #: requests (serving/batching.py); a larger request is cut into calls of this size.
    max_batch_size: int = 256
    #: `SERVING_MAX_QUEUED_IMAGES`: images that may wait for the model; past that, 503 with
    #: Retry-After. 64 clients of 64 images each keep 4,096 waiting.
    max_queued_images: int = 8192
    #: `SERVING_VIEWS`: views of each image the model averages: `model` (all the registered
    #: model's), `flip` (the image and its mirror image) or `one` (serving/model.py).
    views: str = "model"
    #: `SERVING_TRACING`: BentoML's OpenTelemetry spans, `off` or `on` (serving/http/tracing.py).
    tracing: bool = False
    #: `SERVING_MAX_IMAGES`: the most images in one request.
    max_images: int = 64
    #: `SERVING_MAX_REQUEST_BYTES`: the largest request body; a worker admits bodies of twice
    #: that at once (past that, 503 with Retry-After; a lone request is always admitted).
    max_request_bytes: int = 64 * 1024 * 1024
    #: `SERVING_HEADER_TIMEOUT_S`: seconds a connection has for each request's headers (slow
    #: clients are cut: serving/http/connections.py); above uvicorn's 5 s keep-alive timeout.
    header_timeout_s: float = 10.0
    #: `SERVING_PIXEL_SAMPLES`: the fraction (0 to 1) of served images whose model-sized
    #: pixels monitoring keeps, as PNG files in a capped folder beside its log
    #: (serving/monitoring.py); 0, none.
    pixel_samples: float = 0.0

    @property
    def max_bytes_in_flight(self) -> int:
        return 2 * self.max_request_bytes


#: Each field's environment variable.
ENV = {field.name: f"SERVING_{field.name.upper()}" for field in dataclasses.fields(Settings)}
ENV["model_tag"] = "SERVING_MODEL"


def _parse(name: str, raw: str, default):
    """`raw` as the type of `default`; SystemExit in one line when it is not."""
    variable = ENV[name]
    if name == "views":
        if raw not in VIEWS:
            raise SystemExit(f"{variable} must be one of {', '.join(VIEWS)}; got {raw!r}")
        return raw
    if name == "pixel_samples":
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0.0 <= value <= 1.0:
            raise SystemExit(f"{variable} must be a fraction from 0 to 1; got {raw!r}")
        return value
    if name == "gpu":
        if raw not in ("0", "1"):
            raise SystemExit(f"{variable} must be 0 or 1; got {raw!r}")
        return raw == "1"
    if isinstance(default, bool):
        if raw not in SWITCHES:
            raise SystemExit(f"{variable} must be on or off; got {raw!r}")
        return SWITCHES[raw]
    if isinstance(default, int):
        if not raw.isdigit() or int(raw) < 1:
            raise SystemExit(f"{variable} must be a whole number of at least 1; got {raw!r}")
        return int(raw)
    if isinstance(default, float):
        try:
            value = float(raw)
        except ValueError:
            value = float("nan")
        if not 0 < value < float("inf"):
            raise SystemExit(f"{variable} must be a positive number of seconds; got {raw!r}")
        return value
    return raw


#: The Keras backends the service runs on (`KERAS_BACKEND`; SERVICE.md, Backends).
KERAS_BACKENDS = ("tensorflow", "jax")


def check_keras_backend(environ: dict[str, str] | None = None) -> None:
    """SystemExit in one line for a `KERAS_BACKEND` the service does not run on, before Keras
    is imported (which would fail on the missing package with a traceback)."""
    chosen = (os.environ if environ is None else environ).get("KERAS_BACKEND", "").strip()
    if chosen and chosen not in KERAS_BACKENDS:
        raise SystemExit(
            f"KERAS_BACKEND={chosen} is not a backend the service runs on: set it to one of "
            f"{', '.join(KERAS_BACKENDS)}, or leave it unset for tensorflow"
        )


def load(environ: dict[str, str] | None = None) -> Settings:
    """The settings from `environ` (default: the process environment); unset or empty
    variables keep their defaults."""
    environ = os.environ if environ is None else environ
    defaults = Settings()
    given = {}
    for name, variable in ENV.items():
        raw = environ.get(variable, "").strip()
        if raw:
            given[name] = _parse(name, raw, getattr(defaults, name))
    return dataclasses.replace(defaults, **given)
