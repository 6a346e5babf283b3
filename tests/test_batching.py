"""The in-worker adaptive batcher: merged model calls, each caller gets exactly its own rows."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from bentoml.exceptions import ServiceUnavailable

from serving.batching import AdaptiveBatcher


class SlowModel:
    """A real function standing in for the network: row sums, 20 ms per call, calls recorded."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.batch_sizes: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batch_sizes.append(len(pixels))
        time.sleep(self.seconds)
        return pixels.reshape(len(pixels), -1).sum(axis=1, keepdims=True)


async def _many_callers(batcher: AdaptiveBatcher, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    inputs = [rng.integers(0, 255, (n, 4, 4, 1)).astype(np.float32) for n in sizes]
    outputs = await asyncio.gather(*(batcher(x) for x in inputs))
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, x.reshape(len(x), -1).sum(axis=1, keepdims=True))
    return outputs


def test_concurrent_callers_are_merged_and_get_their_own_rows():
    model = SlowModel()
    sizes = [1, 3, 1, 2, 5, 1, 1, 4] * 8  # 64 callers, 144 images

    async def main():
        batcher = AdaptiveBatcher(model, max_batch_size=32, max_latency_ms=5000)
        await _many_callers(batcher, sizes)

    asyncio.run(main())
    assert sum(model.batch_sizes) == sum(sizes)
    assert max(model.batch_sizes) > 5, model.batch_sizes  # some call merged several callers
    assert len(model.batch_sizes) < len(sizes)
    assert max(model.batch_sizes) <= 32

    from prometheus_client import REGISTRY

    calls = REGISTRY.get_sample_value("cnn_model_batch_requests_count")
    merged = REGISTRY.get_sample_value("cnn_model_batch_requests_sum")
    assert calls >= len(model.batch_sizes) and merged >= len(sizes)


def test_a_request_larger_than_the_batch_limit_is_split_and_reassembled():
    model = SlowModel(seconds=0.0)

    async def main():
        batcher = AdaptiveBatcher(model, max_batch_size=8, max_latency_ms=5000)
        await _many_callers(batcher, [20, 3])

    asyncio.run(main())
    assert max(model.batch_sizes) <= 8
    assert sum(model.batch_sizes) == 23


def test_load_beyond_the_latency_budget_is_shed_with_503():
    model = SlowModel(seconds=0.05)

    async def main():
        batcher = AdaptiveBatcher(model, max_batch_size=1, max_latency_ms=60)
        results = await asyncio.gather(
            *(batcher(np.ones((1, 4, 4, 1), np.float32)) for _ in range(40)),
            return_exceptions=True,
        )
        return results

    results = asyncio.run(main())
    shed = [r for r in results if isinstance(r, ServiceUnavailable)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert shed and served
    assert len(shed) + len(served) == 40
    assert "overloaded" in str(shed[0])
