"""Serving settings, read once from the environment (so a container is configured with -e)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None


def _choice(name: str, choices: tuple[str, ...], default: str) -> str:
    raw = os.environ.get(name) or default
    if raw not in choices:
        raise SystemExit(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return raw


BATCHERS = ("eager", "cork", "none")


@dataclass(frozen=True)
class Settings:
    #: BentoML model tag to serve; `latest` is the newest champion saved by `pipeline promote`.
    model_tag: str
    #: Bearer token required on every API call (health endpoints excepted); unset: no auth.
    api_token: str | None
    max_images: int
    max_image_bytes: int
    max_request_bytes: int
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
    #: Requests with more pixels than this in all their images are decoded in a worker thread
    #: (at most `decode_threads` at once), so the event loop keeps answering meanwhile; smaller
    #: ones decode on the loop, where a 28x28 PNG takes less time than a thread hop.
    inline_decode_pixels: int
    decode_threads: int
    #: Worker processes; each holds the model and batches its own requests.
    workers: int


def load() -> Settings:
    return Settings(
        model_tag=os.environ.get("SERVING_MODEL", "cnn-classifier:latest"),
        api_token=os.environ.get("SERVING_API_TOKEN") or None,
        max_images=_int("SERVING_MAX_IMAGES", 64),
        max_image_bytes=_int("SERVING_MAX_IMAGE_BYTES", 10 * 1024 * 1024),
        max_request_bytes=_int("SERVING_MAX_REQUEST_BYTES", 64 * 1024 * 1024),
        max_pixels=_int("SERVING_MAX_PIXELS", 40_000_000),
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
        decode_threads=_int("SERVING_DECODE_THREADS", 2),
        workers=_int("SERVING_WORKERS", 1),
    )
