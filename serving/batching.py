"""Batching of model calls inside the serving worker: the eager batcher.

Why not a batchable endpoint or a second model service: BentoML batches whole HTTP requests
of a batchable endpoint, so one client's corrupt image would fail the merged batch of others,
and nothing per request (such as `k`) can be passed. Putting the model in a second service
(`bentoml.depends`) keeps the endpoint clean but costs every request a second HTTP round trip.
Here each request is validated and decoded first, and only the model call is merged.

Why eager and not BentoML's CORK dispatcher (which its batchable endpoints use): CORK learns a
wait window from recent batches and keeps waiting once traffic is light, so a lone request
after a burst waits for company that never comes (docs/BENCHMARKS.md, latency after load,
measures the two; bench/variants.py holds CORK for that). `EagerBatcher` works like Triton's
dynamic batcher with no queue delay: when the model is idle it runs at once on whatever is
queued, and requests that arrive while it is busy form the next batch. Its latency at light
load does not depend on history.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio.to_thread
import numpy as np
from bentoml.exceptions import ServiceUnavailable

Predict = Callable[[np.ndarray], np.ndarray]

#: Histogram buckets for batch sizes: powers of two, 1 to 4096.
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
#: Histogram buckets for the time a request waits for the model, in seconds.
WAIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Overloaded(ServiceUnavailable):
    """The queue is full: the service answers 503 with `Retry-After: retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


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
        prometheus_client.Histogram(
            "cnn_model_queue_wait_seconds",
            "Time from a request's arrival in the eager batcher's queue to its model call",
            buckets=WAIT_BUCKETS,
        ),
    )


class CountedModel:
    """Runs `predict` on a merged batch in a worker thread and counts it on `/metrics`, so the
    event loop keeps accepting and decoding requests while the model works."""

    def __init__(self, predict: Predict) -> None:
        self._predict = predict
        self.images_per_call, self.requests_per_call, self.queue_wait = _histograms()

    async def run(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        merged = batches[0] if len(batches) == 1 else np.concatenate(batches)
        self.images_per_call.observe(len(merged))
        self.requests_per_call.observe(len(batches))
        probs = await anyio.to_thread.run_sync(self._predict, merged)
        return np.split(probs, np.cumsum([len(b) for b in batches])[:-1])


@dataclass
class _Pending:
    pixels: np.ndarray
    result: asyncio.Future = field(repr=False)
    enqueued: float = field(default_factory=time.perf_counter)
    #: Off the queue: in a model call, or its caller went away.
    dequeued: bool = False


class EagerBatcher:
    """`await batcher(pixels)` returns `predict(pixels)`, computed in a batch with the pixels of
    whoever else was waiting when the model became free.

    - One model call at a time; a call takes queued requests in arrival order up to
      `max_batch_size` images. A request larger than that is cut into pieces first.
    - At most `max_queued_images` images wait; beyond that a caller gets `Overloaded` at once
      (503 with Retry-After) instead of a growing delay.
    - Each request's wait for the model is counted in `cnn_model_queue_wait_seconds`.
    """

    def __init__(self, predict: Predict, *, max_batch_size: int, max_queued_images: int) -> None:
        if max_batch_size < 1 or max_queued_images < 1:
            raise ValueError("max_batch_size and max_queued_images must be at least 1")
        self.max_batch_size = max_batch_size
        self.max_queued_images = max_queued_images
        self._model = CountedModel(predict)
        self._queue: deque[_Pending] = deque()
        self._queued_images = 0
        self._drainer: asyncio.Task | None = None

    @property
    def queued_images(self) -> int:
        return self._queued_images

    async def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if not len(pixels):
            raise ValueError("nothing to predict: the batch has no images")
        if len(pixels) + self._queued_images > self.max_queued_images:
            raise Overloaded(
                f"the model's queue is full ({self._queued_images} images waiting, limit "
                f"{self.max_queued_images}); retry shortly"
            )
        loop = asyncio.get_running_loop()
        pieces = [
            _Pending(pixels[i : i + self.max_batch_size], loop.create_future())
            for i in range(0, len(pixels), self.max_batch_size)
        ]
        self._queue.extend(pieces)
        self._queued_images += len(pixels)
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain())
        try:
            results = await asyncio.gather(*(p.result for p in pieces))
        finally:
            for piece in pieces:  # a caller that went away frees its places in the queue
                if not piece.dequeued:
                    piece.dequeued = True
                    piece.result.cancel()
                    self._queued_images -= len(piece.pixels)
        return results[0] if len(results) == 1 else np.concatenate(results)

    def _next_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        images = 0
        while self._queue:
            head = self._queue[0]
            if batch and images + len(head.pixels) > self.max_batch_size:
                break
            self._queue.popleft()
            if head.dequeued:  # its caller went away and gave its places back
                continue
            head.dequeued = True
            self._queued_images -= len(head.pixels)
            batch.append(head)
            images += len(head.pixels)
        return batch

    async def _drain(self) -> None:
        """Runs the model while anything is queued; the loop yields to the event loop only
        while the model computes, so what arrives meanwhile is the next batch."""
        while self._queue:
            batch = self._next_batch()
            if not batch:
                continue
            now = time.perf_counter()
            for pending in batch:
                self._model.queue_wait.observe(now - pending.enqueued)
            try:
                outputs = await self._model.run([p.pixels for p in batch])
            except Exception as exc:  # every waiting caller learns what failed
                for pending in batch:
                    if not pending.result.done():
                        pending.result.set_exception(exc)
                continue
            for pending, output in zip(batch, outputs, strict=True):
                if not pending.result.done():
                    pending.result.set_result(output)
