"""ASGI middleware in front of the API: optional bearer token and a request-size limit."""

from __future__ import annotations

import contextlib
import hmac
import json

#: Probes and metrics stay open so orchestrators can check the service without the token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/livez", "/metrics"})


class RequestGuard:
    """401 without the right `Authorization: Bearer <token>`; 413 above the size limit.

    The size is judged from Content-Length before the body is read, and counted as the body
    arrives for bodies without one (chunked) or that send more than they declared.
    """

    def __init__(self, app, token: str | None = None, max_request_bytes: int = 0) -> None:
        self.app = app
        self.token = token
        self.max_request_bytes = max_request_bytes

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
        if self.max_request_bytes and length.isdigit() and int(length) > self.max_request_bytes:
            await _reply(
                send, 413, f"request of {length} bytes exceeds {self.max_request_bytes} bytes"
            )
            return
        if not self.max_request_bytes:
            await self.app(scope, receive, send)
            return
        await self._counting_body(scope, receive, send)

    async def _counting_body(self, scope, receive, send) -> None:
        """The app, with the body counted as it arrives (a chunked body has no Content-Length):
        past the limit, reading stops and the client gets 413 instead of whatever the app,
        interrupted, would answer; uvicorn then closes the connection unread."""
        limit = self.max_request_bytes
        state = {"received": 0, "over": False, "answered": False}
        message_413 = f"request body exceeds {limit} bytes"

        async def counted_receive():
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > limit:
                    state["over"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message) -> None:
            if not state["over"]:
                await send(message)
            elif message["type"] == "http.response.start" and not state["answered"]:
                state["answered"] = True
                await _reply(send, 413, message_413)

        with contextlib.suppress(_BodyTooLarge):  # the app let it through: answer here
            await self.app(scope, counted_receive, guarded_send)
        if state["over"] and not state["answered"]:
            await _reply(send, 413, message_413)


class _BodyTooLarge(Exception):
    """Raised into the app's body reading once the body passes the limit."""


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps([{"error": message}]).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
