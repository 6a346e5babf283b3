"""Keep Python's full garbage collections short in a serving worker.

A worker that has imported TensorFlow, Keras and BentoML holds hundreds of thousands of
objects that live as long as the process. CPython's oldest-generation collection walks all of
them every time it runs: a pause of a large fraction of a second, one stalled request every
few seconds under load. `gc.freeze()` moves them to a permanent
generation that collections skip; objects created afterwards are collected as usual.
"""

from __future__ import annotations

import functools
import gc


@functools.cache
def _frozen_gauge():
    """Created once, on first use: BentoML sets PROMETHEUS_MULTIPROC_DIR after importing us."""
    import prometheus_client

    return prometheus_client.Gauge(
        "cnn_gc_frozen_objects",
        "Objects moved out of reach of the garbage collector after start-up",
        multiprocess_mode="max",
    )


def freeze_startup_objects() -> int:
    """Collect once, then exempt every object alive now from later collections.

    Call it when start-up is done (model loaded and warmed up). Returns how many objects are
    frozen, also exported as the `cnn_gc_frozen_objects` gauge on `/metrics`.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    _frozen_gauge().set(frozen)
    return frozen
