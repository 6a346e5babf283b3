"""Serving settings, read once from the environment (so a container is configured with -e)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pipeline.preprocess import DEFAULT_MAX_PIXELS
from serving import batch_norm, forward, threads, views


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise SystemExit(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


BATCHERS = ("eager", "cork", "none")
BATCH_NORMS = batch_norm.CHOICES
SWITCHES = ("on", "off")


@dataclass(frozen=True)
class Settings:
    #: BentoML model tag to serve; `latest` is the newest champion saved by `pipeline promote`.
    model_tag: str
    #: Bearer token required on every API call (health endpoints excepted); unset: no auth.
    api_token: str | None
    max_images: int
    max_image_bytes: int
    max_request_bytes: int
    #: Bytes of requests a worker admits at once (counted before BentoML parses them); past
    #: it, 503 with Retry-After. A lone request within `max_request_bytes` is always admitted.
    max_bytes_in_flight: int
    #: Seconds a connection has for each request's headers (serving/connections.py).
    header_timeout_s: float
    max_pixels: int
    max_k: int
    #: Ask BentoML for one GPU for the service (set when the bento is built for GPU).
    gpu: bool
    #: How concurrent requests share model calls (serving/batching.py): `eager` (run at once
    #: on whatever is queued), `cork` (BentoML's adaptive dispatcher) or `none` (one call per
    #: request; only to measure what batching buys).
    batcher: str
    #: The largest model call, in images.
    max_batch_size: int
    #: eager: images allowed to wait for the model; beyond that, 503 with Retry-After.
    max_queued_images: int
    #: cork: the latency budget the dispatcher plans for; it sheds load it cannot serve in time.
    max_latency_ms: int
    #: Requests with more pixels than this in all their images are decoded in a separate
    #: process (at most `decode_processes` at once), so the event loop keeps answering
    #: meanwhile; smaller ones decode on the loop (serving/decoding.py says why).
    inline_decode_pixels: int
    decode_processes: int
    #: TensorFlow's CPU thread pools: `auto`, or fixed ones (serving/threads.py says why).
    tf_threads: str | threads.ThreadPools
    #: Worker processes; each holds the model and batches its own requests.
    workers: int
    #: Views of each image the model averages: `model`, `flip` or `one` (serving/views.py).
    views: str = "model"
    #: Inference batch norm folded into the layer before it where it can be, else in
    #: TensorFlow's fused kernel (`folded`); fused everywhere (`fused`); or Keras' own ops
    #: (`keras`; only to measure what the others buy): serving/batch_norm.py.
    batch_norm: str = "folded"
    #: How the model is called: `traced` (its graph, traced once) or `keras`
    #: (`predict_on_batch`; only to measure what tracing buys): serving/forward.py.
    model_call: str = "traced"
    #: BentoML's OpenTelemetry spans for each request: `off` (the default), or `on` for a
    #: deployment that configures BentoML's tracing exporter; serving/observability.py.
    tracing: str = "off"
    #: BentoML's access log, one line per request: `on` (the default) or `off`.
    access_log: str = "on"


def load() -> Settings:
    return Settings(
        model_tag=os.environ.get("SERVING_MODEL", "cnn-classifier:latest"),
        api_token=os.environ.get("SERVING_API_TOKEN") or None,
        max_images=_int("SERVING_MAX_IMAGES", 64),
        max_image_bytes=_int("SERVING_MAX_IMAGE_BYTES", 10 * 1024 * 1024),
        max_request_bytes=_int("SERVING_MAX_REQUEST_BYTES", 64 * 1024 * 1024),
        # Two requests of the largest size: parsed JSON takes several times its bytes.
        max_bytes_in_flight=_int("SERVING_MAX_BYTES_IN_FLIGHT", 128 * 1024 * 1024),
        # Above uvicorn's 5 s keep-alive timeout, which closes idle connections first.
        header_timeout_s=_seconds("SERVING_HEADER_TIMEOUT_S", 10.0),
        max_pixels=_int("SERVING_MAX_PIXELS", DEFAULT_MAX_PIXELS),
        max_k=_int("SERVING_MAX_K", 100),
        gpu=os.environ.get("SERVING_GPU", "0") == "1",
        batcher=_choice("SERVING_BATCHER", BATCHERS, "eager"),
        max_batch_size=_int("SERVING_MAX_BATCH_SIZE", 256),
        # 64 clients sending 64 images each keep 4,096 images waiting; twice that is about
        # 1.6 s of work for the VGG champion at its measured 5,000 images/s on 2 cores.
        max_queued_images=_int("SERVING_MAX_QUEUED_IMAGES", 8192),
        # cork, measured on 2 cores: with 20 ms, 8+ concurrent clients got mostly 503s (the
        # worker's own queueing exceeds the budget); with 1000 ms, 1-image requests batched
        # without errors but 32 clients sending 64 images each got 503s from the dispatcher's
        # load shedding; 5000 ms serves both without errors.
        max_latency_ms=_int("SERVING_MAX_LATENCY_MS", 5000),
        # 512 x 512: a few milliseconds of decoding at most on the event loop.
        inline_decode_pixels=_int("SERVING_INLINE_DECODE_PIXELS", 512 * 512),
        # One process: on 2 cores, the other core is left to the event loop and the model.
        decode_processes=_int("SERVING_DECODE_PROCESSES", 1),
        tf_threads=threads.parse(os.environ.get("SERVING_TF_THREADS", "auto")),
        workers=_int("SERVING_WORKERS", 1),
        views=_choice("SERVING_VIEWS", views.CHOICES, "model"),
        batch_norm=_choice("SERVING_BATCH_NORM", BATCH_NORMS, "folded"),
        model_call=_choice("SERVING_MODEL_CALL", forward.CHOICES, "traced"),
        tracing=_choice("SERVING_TRACING", SWITCHES, "off"),
        access_log=_choice("SERVING_ACCESS_LOG", SWITCHES, "on"),
    )
