"""ASGI middleware in front of the API: bearer token, request-size limit, bytes in flight.

It runs before BentoML reads a body, so a request refused here costs no parsing: a 60 MB JSON
array becomes several hundred MB of Python objects once BentoML has parsed it, and only a
bound on the bytes admitted at once keeps a few of them from taking the worker's memory.
"""

from __future__ import annotations

import contextlib
import hmac
import json
from dataclasses import dataclass, field

#: Probes and metrics stay open so orchestrators can check the service without the token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/metrics"})


@dataclass
class _Refusal:
    status: int
    message: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


class RequestGuard:
    """401 without the right `Authorization: Bearer <token>`; 413 above the size limit; 503
    with `Retry-After` when admitting the body would pass the bytes-in-flight budget.

    Sizes are judged from Content-Length before the body is read, and counted as the body
    arrives for bodies without one (chunked) or that send more than they declared. A request
    holds its share of the budget until its response is sent. When nothing else is in flight
    any request within the size limit is admitted, so the budget never refuses a lone request.
    """

    def __init__(
        self,
        app,
        token: str | None = None,
        max_request_bytes: int = 0,
        max_bytes_in_flight: int = 0,
    ) -> None:
        self.app = app
        self.token = token
        self.max_request_bytes = max_request_bytes
        self.max_bytes_in_flight = max_bytes_in_flight
        #: Bytes of the requests being received or answered now, in this worker.
        self.bytes_in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.token and scope.get("method") == "POST":
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                await _reply(send, 401, "missing or wrong bearer token (Authorization header)")
                return
        length = headers.get("content-length", "")
        declared = int(length) if length.isdigit() else 0
        if self.max_request_bytes and declared > self.max_request_bytes:
            await _reply(
                send, 413, f"request of {length} bytes exceeds {self.max_request_bytes} bytes"
            )
            return
        if self._over_budget(declared):
            await _reply(send, *self._busy(declared))
            return
        if not (self.max_request_bytes or self.max_bytes_in_flight):
            await self.app(scope, receive, send)
            return
        await self._counting_body(scope, receive, send, reserved=declared)

    def _over_budget(self, more: int) -> bool:
        return bool(
            self.max_bytes_in_flight
            and self.bytes_in_flight
            and self.bytes_in_flight + more > self.max_bytes_in_flight
        )

    def _busy(self, more: int) -> tuple[int, str, list[tuple[bytes, bytes]]]:
        message = (
            f"server busy: {self.bytes_in_flight} bytes of requests in flight, and {more} more "
            f"would pass the budget of {self.max_bytes_in_flight}; retry shortly"
        )
        return 503, message, [(b"retry-after", b"1")]

    async def _counting_body(self, scope, receive, send, reserved: int) -> None:
        """The app, with the body counted as it arrives: past the size limit or the budget,
        reading stops and the client gets 413 or 503 instead of whatever the app, interrupted,
        would answer; uvicorn then closes the connection unread."""
        state = {"received": 0, "held": reserved, "refusal": None, "answered": False}
        self.bytes_in_flight += reserved

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                extra = state["received"] - state["held"]
                if self.max_request_bytes and state["received"] > self.max_request_bytes:
                    limit = self.max_request_bytes
                    state["refusal"] = _Refusal(413, f"request body exceeds {limit} bytes")
                elif extra > 0 and self._over_budget(extra):
                    state["refusal"] = _Refusal(*self._busy(extra))
                elif extra > 0:
                    state["held"] += extra
                    self.bytes_in_flight += extra
                if state["refusal"] is not None:
                    raise _BodyRefused
            return message

        async def guarded_send(message) -> None:
            refusal = state["refusal"]
            if refusal is None:
                await send(message)
            elif message["type"] == "http.response.start" and not state["answered"]:
                state["answered"] = True
                await _reply(send, refusal.status, refusal.message, refusal.headers)

        try:
            with contextlib.suppress(_BodyRefused):  # the app let it through: answer here
                await self.app(scope, counted_receive, guarded_send)
            refusal = state["refusal"]
            if refusal is not None and not state["answered"]:
                await _reply(send, refusal.status, refusal.message, refusal.headers)
        finally:
            self.bytes_in_flight -= state["held"]


class _BodyRefused(Exception):
    """Raised into the app's body reading once the body passes the size limit or the budget."""


async def _reply(
    send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps([{"error": message}]).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
