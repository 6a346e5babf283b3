"""What BentoML records of each request: OpenTelemetry spans, request ids and the access log.

BentoML wraps every request in OpenTelemetry's ASGI middleware, which starts a server span and
a further span for each message the response sends. Out of the box BentoML samples none of
them (`tracing.sample_rate` 0) and exports them nowhere (no `tracing.exporter_type`), yet the
spans are still made: a py-spy profile put them at about a fifth of the event loop's CPU for a
one-image request at 1 client. With them (`SERVING_TRACING=on`) the p50 of one PNG at 1 client
was 1.56x the defaults' and of a no-op request 1.27x (docs/BENCHMARKS.md, "Serving choices").

- `SERVING_TRACING=off` (the default) excludes every URL from that middleware, which then
  passes requests straight through. `RequestIds` gives each request fresh ids, as the unsampled
  span did: the `X-BentoML-Request-ID` response header and the `trace=...,span=...` of
  its log lines, which carry the same id, so a client's report still finds its log lines.
- `SERVING_TRACING=on` keeps BentoML's tracing, for a deployment that sets an exporter and a
  sample rate in BentoML's `tracing` configuration.
- The access log (`SERVING_ACCESS_LOG`) stays on by default: it is what an operator reads
  first. `off` made no difference the same benchmark could tell from its noise.
"""

from __future__ import annotations

import random
from typing import Any

from bentoml._internal.context import trace_context
from opentelemetry import context, trace

from serving.settings import Settings

#: OpenTelemetry's exclusion list: regular expressions searched in each request's URL.
EVERY_URL = [".*"]


def service_config(settings: Settings) -> dict[str, Any]:
    """The `bentoml.service` options for `settings`' tracing and access log."""
    config: dict[str, Any] = {}
    if settings.tracing == "off":
        config["tracing"] = {"excluded_urls": EVERY_URL}
    if settings.access_log == "off":
        config["logging"] = {"access": {"enabled": False}}
    return config


class RequestIds:
    """ASGI middleware, with tracing off: each HTTP request runs under a span that records
    nothing (OpenTelemetry's `NonRecordingSpan`, which is what an unsampled span is) with fresh
    random ids, and BentoML's request id is that span's id. Attaching it costs microseconds;
    OpenTelemetry's middleware spent hundreds on spans nobody kept."""

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
