"""Mixed precision: which Keras dtype policy a model is built, trained and served under.

bfloat16 halves the bytes every convolution moves and runs on the bf16 units of Ampere and
later GPUs and of CPUs with AVX512_BF16 or AMX, without the loss scaling float16 needs.
Variables stay float32 and the logits layer computes in float32 (pipeline/models/layers.py),
so the loss and the softmax see full precision. A saved `.keras` file keeps each layer's
policy, so the service computes exactly as the evaluated model did.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.environment import cpuinfo_field, first_gpu_details

#: `auto` picks per machine (see `resolve`); the others are Keras dtype policy names.
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")

#: CPU flags (Linux /proc/cpuinfo) of instructions that compute in bfloat16.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    return set((cpuinfo_field("flags", cpuinfo) or "").split())


def gpu_compute_capability() -> tuple[int, int] | None:
    """The compute capability of the first GPU the backend sees, or None without one."""
    details = first_gpu_details()
    if details is None:
        return None
    return tuple(details.get("compute_capability") or (0, 0))


def auto_precision(capability: tuple[int, int] | None, flags: set[str]) -> str:
    """bf16 where the hardware computes in it, float16 on older tensor-core GPUs, else float32.

    A CPU without bf16 instructions would emulate them, slower than float32.
    """
    if capability is not None:
        if capability >= (8, 0):
            return "mixed_bfloat16"
        return "mixed_float16" if capability >= (7, 0) else "float32"
    return "mixed_bfloat16" if flags & set(BF16_CPU_FLAGS) else "float32"


def resolve(precision: str) -> str:
    """The Keras dtype policy name that `precision` means on this machine."""
    if precision != "auto":
        return precision
    return auto_precision(gpu_compute_capability(), cpu_flags())


@contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under the dtype policy `name`; the global policy is restored afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def model_precision(model) -> str:
    """The dtype policy a built or loaded model computes in: that of its first weighted layer.

    The model object's own policy is not saved with it; each layer's is. The logits layer is
    float32 under every policy, so it does not count.
    """
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):  # a wrapped network (pipeline/tta.py)
            return model_precision(layer)
        if layer.weights and layer.name != "logits":
            return layer.dtype_policy.name
    return model.dtype_policy.name
