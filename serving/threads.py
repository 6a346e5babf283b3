"""TensorFlow's CPU thread pools for the served model, chosen from the model's shape of work.

A flip-averaged model (pipeline/test_time.py) is two independent passes of one network: the
image and its mirror image. TensorFlow's defaults give every op all the cores (intra-op) and
run the two passes one op at a time on them; on 2 cores, small convolutions spend much of that
in thread hand-offs. One core per pass (intra-op = cores / 2) with both passes running at once
(inter-op = cores) answers one image in 0.893x the time and 64 in 0.944x (docs/BENCHMARKS.md,
"The model call by thread pools"; 0.562x and 0.826x before batch norm was folded into the
convolutions). The same holds for a model averaging more views (the flip and shifts: ten
passes). A one-view model has no second pass to overlap, so it keeps the
defaults, as does a GPU, where the threads only feed the device.

`SERVING_TF_THREADS`: `auto` (the above), `default` (TensorFlow's own) or `INTRA,INTER`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ThreadPools:
    """Sizes of TensorFlow's two CPU thread pools; 0 is TensorFlow's default (one per core)."""

    intra_op: int = 0
    inter_op: int = 0


def parse(raw: str) -> str | ThreadPools:
    """`auto`, or fixed pools for `default` and `INTRA,INTER`; SystemExit names what to fix."""
    raw = raw.strip() or "auto"
    if raw == "auto":
        return raw
    if raw == "default":
        return ThreadPools()
    try:
        intra, inter = (int(part) for part in raw.split(","))
    except ValueError:
        intra = inter = -1
    if not (1 <= intra <= 1024 and 1 <= inter <= 1024):
        raise SystemExit(
            f"SERVING_TF_THREADS must be auto, default or INTRA,INTER (two integers from 1 to "
            f"1024, such as 1,2); got {raw!r}"
        )
    return ThreadPools(intra, inter)


def usable_cpus() -> int:
    """Cores this process may run on (its affinity, which a container's cpuset narrows)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose(setting: str | ThreadPools, *, multi_view: bool, gpu: bool, cpus: int) -> ThreadPools:
    """The pools for `setting`: fixed ones as given; `auto` by the rule in the module doc."""
    if isinstance(setting, ThreadPools):
        return setting
    if multi_view and not gpu and cpus >= 2:
        return ThreadPools(intra_op=cpus // 2, inter_op=cpus)
    return ThreadPools()


def apply(pools: ThreadPools) -> ThreadPools:
    """Sets the pools before TensorFlow starts its runtime; returns what TensorFlow reports."""
    import tensorflow as tf

    if pools.intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(pools.intra_op)
    if pools.inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(pools.inter_op)
    return ThreadPools(
        intra_op=tf.config.threading.get_intra_op_parallelism_threads(),
        inter_op=tf.config.threading.get_inter_op_parallelism_threads(),
    )
