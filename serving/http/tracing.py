"""BentoML's OpenTelemetry spans per request: off by default, with request ids kept.

BentoML wraps every request in OpenTelemetry's ASGI middleware, which starts a server span and
a further span for each message the response sends. Out of the box BentoML samples none of
them (`tracing.sample_rate` 0) and exports them nowhere, yet the spans are still made, a large
share of a small request's CPU (docs/BENCHMARKS.md measures the service with them on and off).

- `SERVING_TRACING=off` (the default) excludes every URL from that middleware, which then
  passes requests straight through. `RequestIds` gives each request fresh ids, as the unsampled
  span did: the `X-BentoML-Request-ID` response header and the `trace=...,span=...` of its log
  lines carry the same id, so a client's report still finds its log lines. It sets BentoML's
  request-id context variable (`bentoml._internal.context.trace_context`), a private name.
- `SERVING_TRACING=on` keeps BentoML's tracing, for a deployment that sets an exporter and a
  sample rate in BentoML's `tracing` configuration.
"""

from __future__ import annotations

import random
from typing import Any

from bentoml._internal.context import trace_context
from opentelemetry import context, trace

#: OpenTelemetry's exclusion list: regular expressions searched in each request's URL.
EVERY_URL = [".*"]


def service_config(tracing: bool) -> dict[str, Any]:
    """The `bentoml.service` options for tracing on or off."""
    return {} if tracing else {"tracing": {"excluded_urls": EVERY_URL}}


class RequestIds:
    """ASGI middleware, with tracing off: each HTTP request runs under a span that records
    nothing (OpenTelemetry's `NonRecordingSpan`, which is what an unsampled span is) with fresh
    random ids, and BentoML's request id is that span's id. Attaching it costs microseconds;
    OpenTelemetry's middleware spent far more on spans nobody kept."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ids = trace.SpanContext(
            trace_id=random.getrandbits(128) or 1,
            span_id=random.getrandbits(64) or 1,
            is_remote=False,
        )
        token = context.attach(trace.set_span_in_context(trace.NonRecordingSpan(ids)))
        trace_context.request_id = ids.span_id
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)


def request_id() -> str:
    """The current request's id, as its response header and log lines give it (and as
    BentoML's monitor would record it): monitoring logs it off the request's context."""
    return str(trace_context.request_id)
