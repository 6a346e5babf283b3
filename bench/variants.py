"""Variants of the shipped service that exist only to be measured beside it.

`bentoml serve bench.variants:Variant` serves the shipped `ClassifierService` with the changes
`BENCH_VARIANT` names (comma-separated), behind the same HTTP layer (serving.service.configure):

- `noop`: adds `POST /noop`, which does nothing: the HTTP path's own ceiling, what `/classify`
  with one image is compared with;
- `unbatched`: one model call per request (in a worker thread), no merging, for what the
  eager batcher buys;
- `cork`: BentoML's CORK dispatcher (what its batchable endpoints use) in place of the eager
  batcher, for the latency after bursts;
- `decode-on-loop`: every image decoded on the event loop, never in the decoding process, for
  the health checks during floods of large images.

Everything else reads the same `SERVING_*` settings as the shipped service.
"""

from __future__ import annotations

import os

import bentoml

from bench.cork import CorkBatcher
from pipeline.preprocess import ImageShape
from serving.decoding import Decoder
from serving.service import SERVICE_OPTIONS, SETTINGS, ClassifierService, configure

CHOICES = frozenset({"noop", "unbatched", "cork", "decode-on-loop"})


def chosen(raw: str | None = None) -> frozenset[str]:
    """The variants `BENCH_VARIANT` names; SystemExit in one line for an unknown one."""
    raw = os.environ.get("BENCH_VARIANT", "") if raw is None else raw
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    if names - CHOICES:
        raise SystemExit(
            f"BENCH_VARIANT: unknown {', '.join(sorted(names - CHOICES))}; "
            f"choose from {', '.join(sorted(CHOICES))}"
        )
    return names


#: CORK's latency budget: on 2 cores, 5 s serves both 1-image and 64-image bursts without the
#: dispatcher shedding; smaller budgets shed most requests at 8 or more clients.
CORK_MAX_LATENCY_MS = 5000

VARIANTS = chosen()


class VariantService(ClassifierService):
    """The shipped service with the variants of `BENCH_VARIANT`."""

    def make_batcher(self, predict):
        if "unbatched" in VARIANTS:
            return None
        if "cork" in VARIANTS:
            return CorkBatcher(
                predict,
                max_batch_size=SETTINGS.max_batch_size,
                max_latency_ms=CORK_MAX_LATENCY_MS,
            )
        return super().make_batcher(predict)

    def make_decoder(self, shape: ImageShape) -> Decoder:
        if "decode-on-loop" in VARIANTS:
            return Decoder(shape, inline_pixels=2**62)
        return super().make_decoder(shape)

    @bentoml.api
    def noop(self) -> dict:
        """Does nothing (with `BENCH_VARIANT=noop`; 404 without)."""
        if "noop" not in VARIANTS:
            raise bentoml.exceptions.NotFound("this variant has no /noop: BENCH_VARIANT=noop")
        return {"ok": True}


Variant = configure(bentoml.service(**SERVICE_OPTIONS)(VariantService))
