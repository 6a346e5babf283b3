"""Adaptive batching of model calls inside the serving worker, by BentoML's own dispatcher.

Why not a batchable endpoint or a second model service: BentoML batches whole HTTP requests
of a batchable endpoint, so one client's corrupt image would fail the merged batch of others,
and nothing per request (such as `k`) can be passed. Putting the model in a second service
(`bentoml.depends`) keeps the endpoint clean but costs every request a second HTTP round trip,
about as much CPU as the whole no-op request (docs/BENCHMARKS.md). Here each request is
validated and decoded first, and only the model call is merged with others, by the CORK
dispatcher BentoML uses for batchable endpoints (same `max_batch_size` / `max_latency_ms`
meaning, same load shedding with 503 when the latency budget cannot be kept).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import anyio.to_thread
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import ServiceUnavailable

Predict = Callable[[np.ndarray], np.ndarray]


def _overloaded() -> np.ndarray:
    raise ServiceUnavailable("the model is overloaded: the request could not be served in time")


#: Histogram buckets for batch sizes: powers of two, 1 to 4096.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))


@functools.cache
def _histograms():
    """Created once per process (Prometheus refuses a second metric of the same name), and only
    when first needed: BentoML sets PROMETHEUS_MULTIPROC_DIR after importing the service."""
    import prometheus_client

    return (
        prometheus_client.Histogram(
            "cnn_model_batch_images", "Images per model call", buckets=BATCH_BUCKETS
        ),
        prometheus_client.Histogram(
            "cnn_model_batch_requests",
            "Requests merged into one model call",
            buckets=BATCH_BUCKETS,
        ),
    )


class AdaptiveBatcher:
    """`await batcher(pixels)` runs `predict` on `pixels` merged with concurrent callers' pixels.

    `predict` runs in a worker thread, one batch at a time, so the event loop keeps accepting
    and decoding requests while the model works. Every model call is counted in two Prometheus
    histograms on `/metrics`: images per call and requests per call.
    """

    def __init__(self, predict: Predict, *, max_batch_size: int, max_latency_ms: int) -> None:
        self._predict = predict
        self._dispatcher = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_overloaded,
            get_batch_size=len,
            batch_dim=(0, 0),
        )
        self._call = self._dispatcher(self._run)
        self.images_per_call, self.requests_per_call = _histograms()

    async def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return await self._call(pixels)

    async def _run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        merged = batches[0] if len(batches) == 1 else np.concatenate(batches)
        self.images_per_call.observe(len(merged))
        self.requests_per_call.observe(len(batches))
        probs = await anyio.to_thread.run_sync(self._predict, merged)
        return np.split(probs, np.cumsum([len(b) for b in batches])[:-1])
