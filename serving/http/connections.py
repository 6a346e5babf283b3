"""uvicorn's HTTP parser in C, on connections that must finish their request headers in time
and that tell each request when its client hangs up.

uvicorn, which BentoML runs each worker on, parses HTTP with httptools (C) when it is
installed and with h11 (pure Python) otherwise; httptools is a pinned dependency, cheaper per
request than h11.

Slowloris: uvicorn has a keep-alive timeout between requests but none for the headers
themselves. A client that opens a connection and sends nothing, or a header line every few
seconds, holds it (and its file descriptor) forever. `HeaderTimeoutProtocol` gives each request
`header_timeout_s` seconds for its headers, counted from the connection's opening or from the
previous response. A connection past it is closed, with `408 Request Timeout` when the client
had started a request (a silent close otherwise, as for an idle keep-alive connection, so that
a client reusing it retries).

Clients that hang up: each request's scope gets a future (`CLIENT_GONE`, an ASGI extension)
that is resolved when the connection is lost before the request's answer is complete, which
uvicorn itself tells an app only through `receive`. serving/http/lifetime.py cancels the request's
work on it.

BentoML builds the uvicorn config itself and offers no choice of protocol class, so `install`
points uvicorn's `auto` and `httptools` protocol names at this class before the worker's server
loads them (the service module is imported first).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.http.lifetime import CLIENT_GONE

_TIMEOUT_BODY = json.dumps([{"error": "request headers not received in time"}]).encode()
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request headers are late."""

    #: Set by `install` (SERVING_HEADER_TIMEOUT_S).
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        #: The parser has seen the start of a request whose headers are not complete.
        self._in_headers = False
        #: Each request whose answer is not complete: its CLIENT_GONE future (lifetime.py).
        self._unanswered: deque[asyncio.Future] = deque()
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._disarm()  # the request runs; its body is the request timeout's business
        gone = self.loop.create_future()
        self.scope.setdefault("extensions", {})[CLIENT_GONE] = gone
        self._unanswered.append(gone)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if self._unanswered:  # HTTP/1.1 answers in order: the oldest one is complete
            self._unanswered.popleft()
        super().on_response_complete()
        # Waiting for the next request on this connection, unless one had arrived whole.
        if not self.transport.is_closing() and self._idle():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        for gone in self._unanswered:  # the one being answered, and any pipelined behind it
            if not gone.done():
                gone.set_result(None)
        self._unanswered.clear()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """No request on this connection is being answered or waits, whole, to be."""
        return not self.pipeline and (self.cycle is None or self.cycle.response_complete)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._idle():
            return
        if self._in_headers:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def install(header_timeout_s: float) -> None:
    """Make uvicorn use `HeaderTimeoutProtocol` with this timeout (see the module's doc)."""
    HeaderTimeoutProtocol.header_timeout_s = header_timeout_s
    target = f"{__name__}:{HeaderTimeoutProtocol.__name__}"
    uvicorn_config.HTTP_PROTOCOLS["auto"] = target
    uvicorn_config.HTTP_PROTOCOLS["httptools"] = target
