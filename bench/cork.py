"""BentoML's CORK dispatcher as a batcher of model calls, beside the eager one it lost to.

The benchmarks serve it (bench/variants.py, `BENCH_VARIANT=cork`) to measure the latency after
bursts against the shipped eager batcher; tests/test_batching.py holds both to the same
contract, which shows that its test of a lone request after a burst can fail.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher

from serving.batching import CountedModel, Overloaded


def _cork_overloaded() -> np.ndarray:
    raise Overloaded("the model is overloaded: the request could not be served in time")


class CorkBatcher:
    """BentoML's CORK dispatcher, as its batchable endpoints use it: it waits up to a learned
    window for more requests and sheds with 503 when `max_latency_ms` cannot be kept."""

    def __init__(
        self, predict: Callable[[np.ndarray], np.ndarray], *, max_batch_size: int, max_latency_ms
    ) -> None:
        self._model = CountedModel(predict)
        dispatcher = CorkDispatcher(
            max_latency_in_ms=max_latency_ms,
            max_batch_size=max_batch_size,
            fallback=_cork_overloaded,
            get_batch_size=len,
            batch_dim=(0, 0),
        )
        self._call = dispatcher(self._model.run)

    async def __call__(self, pixels: np.ndarray) -> np.ndarray:
        return await self._call(pixels)
