"""The in-worker batchers: merged model calls, each caller gets exactly its own rows; the eager
policy never makes a lone request wait for company, whatever came before."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from bentoml.exceptions import ServiceUnavailable

from bench.cork import CorkBatcher
from serving.batching import EagerBatcher, Overloaded


class SlowModel:
    """A real function standing in for the network: row sums, `seconds` per call; it records
    each call's batch size and the moment it started."""

    def __init__(self, seconds: float = 0.02, fail: bool = False) -> None:
        self.seconds = seconds
        self.fail = fail
        self.batch_sizes: list[int] = []
        self.started: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batch_sizes.append(len(pixels))
            self.started.append(time.perf_counter())
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("the model failed")
        return pixels.reshape(len(pixels), -1).sum(axis=1, keepdims=True)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 4, 4, 1)).astype(np.float32)


def _expected(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).sum(axis=1, keepdims=True)


async def _many_callers(batcher, sizes: list[int]) -> list[np.ndarray]:
    inputs = [_images(n, seed) for seed, n in enumerate(sizes)]
    outputs = await asyncio.gather(*(batcher(x) for x in inputs))
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(out, _expected(x))
    return outputs


def _eager(model: SlowModel, max_batch_size: int = 32, max_queued_images: int = 4096):
    return EagerBatcher(model, max_batch_size=max_batch_size, max_queued_images=max_queued_images)


def _cork(model: SlowModel, max_batch_size: int = 32, max_latency_ms: int = 5000):
    return CorkBatcher(model, max_batch_size=max_batch_size, max_latency_ms=max_latency_ms)


@pytest.mark.parametrize("make", [_eager, _cork], ids=["eager", "cork"])
def test_concurrent_callers_are_merged_and_get_their_own_rows(make):
    model = SlowModel()
    sizes = [1, 3, 1, 2, 5, 1, 1, 4] * 8  # 64 callers, 144 images

    async def main():
        await _many_callers(make(model), sizes)

    asyncio.run(main())
    assert sum(model.batch_sizes) == sum(sizes)
    assert max(model.batch_sizes) > 5, model.batch_sizes  # some call merged several callers
    assert len(model.batch_sizes) < len(sizes)
    assert max(model.batch_sizes) <= 32

    from prometheus_client import REGISTRY

    calls = REGISTRY.get_sample_value("cnn_model_batch_requests_count")
    merged = REGISTRY.get_sample_value("cnn_model_batch_requests_sum")
    assert calls >= len(model.batch_sizes) and merged >= len(sizes)


@pytest.mark.parametrize("make", [_eager, _cork], ids=["eager", "cork"])
def test_a_request_larger_than_the_batch_limit_is_split_and_reassembled(make):
    model = SlowModel(seconds=0.0)

    async def main():
        await _many_callers(make(model, max_batch_size=8), [20, 3])

    asyncio.run(main())
    assert max(model.batch_sizes) <= 8
    assert sum(model.batch_sizes) == 23


@pytest.mark.slow  # 6 s of load first
@pytest.mark.parametrize(
    "make",
    [
        _eager,
        pytest.param(
            _cork,
            marks=pytest.mark.xfail(
                strict=True, reason="CORK keeps the wait window it learned under load"
            ),
        ),
    ],
    ids=["eager", "cork"],
)
def test_after_a_burst_a_lone_request_runs_alone_and_at_once(make):
    """Sequential callers after 6 s of 64 concurrent ones (longer than CORK's 5 s between
    refreshes of what it learned): one model call each, and the model starts on each within
    a small bound of its arrival. The cork case shows the test can fail."""
    model = SlowModel(seconds=0.04)
    waits: list[float] = []

    async def main():
        batcher = make(model)
        end = time.perf_counter() + 6
        while time.perf_counter() < end:
            await _many_callers(batcher, [1] * 64)
        merged_calls = len(model.batch_sizes)
        model.seconds = 0.002
        for seed in range(20):
            x = _images(1, seed)
            arrived = time.perf_counter()
            np.testing.assert_array_equal(await batcher(x), _expected(x))
            waits.append(model.started[-1] - arrived)
        return merged_calls

    merged_calls = asyncio.run(main())
    assert max(model.batch_sizes[:merged_calls]) > 1  # the burst was batched
    assert model.batch_sizes[merged_calls:] == [1] * 20
    assert np.median(waits) < 0.01 and max(waits) < 0.05, np.round(waits, 4)


def test_a_full_queue_sheds_at_once_with_503_and_the_rest_are_served():
    model = SlowModel(seconds=0.05)

    async def main():
        batcher = _eager(model, max_batch_size=2, max_queued_images=4)
        return await asyncio.gather(
            *(batcher(_images(1)) for _ in range(40)), return_exceptions=True
        )

    results = asyncio.run(main())
    shed = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert len(served) == 4 and len(shed) == 36  # 4 places; all 40 arrive before the first call
    assert isinstance(shed[0], ServiceUnavailable) and shed[0].retry_after_s >= 1
    assert "queue is full" in str(shed[0])
    assert sum(model.batch_sizes) == 4


def test_a_caller_that_goes_away_frees_its_place_and_others_are_served():
    model = SlowModel(seconds=0.05)

    async def main():
        batcher = _eager(model, max_batch_size=1, max_queued_images=3)
        first = asyncio.ensure_future(batcher(_images(1, 1)))
        leaver = asyncio.ensure_future(batcher(_images(1, 2)))
        await asyncio.sleep(0.01)  # the first is in the model; the leaver waits
        assert batcher.queued_images == 1
        leaver.cancel()
        await asyncio.sleep(0.005)
        assert batcher.queued_images == 0
        later = [_images(1, seed) for seed in (3, 4)]
        outputs = await asyncio.gather(first, *(batcher(x) for x in later))
        for x, out in zip([_images(1, 1), *later], outputs, strict=True):
            np.testing.assert_array_equal(out, _expected(x))
        return batcher.queued_images

    assert asyncio.run(main()) == 0
    assert model.batch_sizes == [1, 1, 1]  # the leaver's image never reached the model


def test_a_failing_model_call_fails_its_callers_and_the_batcher_keeps_serving():
    model = SlowModel(seconds=0.01, fail=True)

    async def main():
        batcher = _eager(model)
        failed = await asyncio.gather(
            *(batcher(_images(1)) for _ in range(3)), return_exceptions=True
        )
        model.fail = False
        return failed, await batcher(_images(2))

    failed, served = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in failed)
    np.testing.assert_array_equal(served, _expected(_images(2)))


def test_cork_sheds_load_beyond_its_latency_budget_with_503():
    model = SlowModel(seconds=0.05)

    async def main():
        batcher = _cork(model, max_batch_size=1, max_latency_ms=60)
        return await asyncio.gather(
            *(batcher(np.ones((1, 4, 4, 1), np.float32)) for _ in range(40)),
            return_exceptions=True,
        )

    results = asyncio.run(main())
    shed = [r for r in results if isinstance(r, Overloaded)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert shed and served
    assert len(shed) + len(served) == 40
    assert "overloaded" in str(shed[0])


def test_bad_batcher_settings_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        EagerBatcher(SlowModel(), max_batch_size=0, max_queued_images=8)
