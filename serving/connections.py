"""Connections that never finish their request headers are closed (slowloris).

uvicorn, which BentoML runs each worker on, has a keep-alive timeout between requests but none
for the headers themselves: a client that opens a connection and sends nothing, or a header
line every few seconds, holds it (and its file descriptor) forever. `HeaderTimeoutH11Protocol`
gives each request `header_timeout_s` seconds for its headers, counted from the connection's
opening or from the previous response; a connection past it is closed, with `408 Request
Timeout` when the client had started a request (a silent close otherwise, as for an idle
keep-alive connection, so that a client reusing it retries).

BentoML builds the uvicorn config itself and offers no choice of protocol class, so `install`
points uvicorn's `auto` and `h11` protocol names at this class before the worker's server
loads them (the service module is imported first). h11 is uvicorn's protocol here: httptools
is not installed.
"""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.h11_impl import H11Protocol

_TIMEOUT_BODY = json.dumps([{"error": "request headers not received in time"}]).encode()
REQUEST_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_TIMEOUT_BODY)}\r\n\r\n".encode()
    + _TIMEOUT_BODY
)


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are late."""

    #: Set by `install` from SERVING_HEADER_TIMEOUT_S.
    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # headers complete: the request runs
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request on this connection, unless one was pipelined already.
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        started = bool(self.conn.trailing_data[0])  # bytes of an unfinished request
        if started:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def install(header_timeout_s: float) -> None:
    """Make uvicorn use `HeaderTimeoutH11Protocol` with this timeout (see the module's doc)."""
    HeaderTimeoutH11Protocol.header_timeout_s = header_timeout_s
    target = f"{__name__}:{HeaderTimeoutH11Protocol.__name__}"
    uvicorn_config.HTTP_PROTOCOLS["auto"] = target
    uvicorn_config.HTTP_PROTOCOLS["h11"] = target
