"""Workarounds for BentoML 1.4.39 internals, each pinned by tests (tests/test_service.py over
HTTP, tests/test_upstream.py in process) that fail if BentoML changes what is used here.

Bad input answered 500: BentoML's multipart reader lets these client errors escape:
- a body that is not valid multipart (Starlette raises its own HTTP 400, which BentoML's
  endpoint wrapper does not recognise);
- a binary file sent in a field that holds text, such as `k` (it is passed to `json.loads`,
  which raises `UnicodeDecodeError`, not the `JSONDecodeError` BentoML catches);
- text in a field that holds text as JSON nested thousands deep (`RecursionError`) or a number
  of thousands of digits (`ValueError` from Python's integer-string limit).

Text fetched as a URL: BentoML reads text sent in a file field (`images`), and a JSON body
that is only a URL sent to an endpoint with file fields, as a URL to download from. That is a
server-side fetch of whatever the client names (it answered 500 here only because a module it
needs is not installed). Here a file field takes files only and URLs are never fetched: 400.

Requests kept alive for the whole `traffic.timeout`: BentoML's timeout middleware schedules a
timer per request and never cancels it, so every request's future and context (its
OpenTelemetry span and more, ~20 objects) stay reachable for 60 s after it is answered. At a
few hundred requests/s that is hundreds of thousands of live objects, which Python's full
garbage collections then walk: pauses of 100+ ms, growing with the request rate.
"""

from __future__ import annotations

import asyncio

from _bentoml_impl import serde
from bentoml._internal.server.http import traffic
from bentoml.exceptions import BadInput
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException


class ClientErrorMultipartSerde(serde.MultipartSerde):
    """BentoML's multipart reader, with malformed input answered 400 and a reason, and file
    fields that take uploaded files only."""

    @staticmethod
    async def ensure_file(obj):
        if isinstance(obj, UploadFile):
            return obj
        raise BadInput(
            "a file field holds text: send image files (multipart parts with a filename); "
            "URLs are not fetched"
        )

    async def parse_request(self, request, cls):
        try:
            return await super().parse_request(request, cls)
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise
            raise BadInput(f"malformed multipart/form-data body: {exc.detail}") from None
        except UnicodeDecodeError:
            raise BadInput(
                "a form field that takes text or a number holds binary data; "
                "send image files in the field 'images'"
            ) from None
        except ValidationError:
            raise
        except (RecursionError, ValueError):
            raise BadInput(
                "a form field holds JSON nested too deeply or a number with too many digits"
            ) from None


class NoFetchJSONSerde(serde.JSONSerde):
    """BentoML's JSON reader (also used for raw bodies) without the download of a body that is
    a URL, and with an empty raw body refused as empty."""

    async def parse_request(self, request, cls):
        body = await request.body()
        if not body and getattr(cls, "__root_input__", False):
            # BentoML would read an empty body as the two bytes `{}`: 415, "not an image".
            raise BadInput("the request body is empty: send the image's bytes as the body")
        return self.deserialize_model(serde.Payload((body,), metadata=request.headers), cls)


class TimerCancellingTimeoutMiddleware(traffic.TimeoutMiddleware):
    """BentoML's request timeout (504 when no response has started in time), with the timer
    cancelled as soon as the response starts, so nothing of the request outlives it."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, _send))
        try:
            await waiter
        except TimeoutError:
            if handler.cancel():
                await traffic.JSONResponse(
                    {"error": f"Not able to process the request in {self.timeout} seconds"},
                    status_code=504,
                )(scope, receive, send)
        else:
            await handler
        finally:
            timer.cancel()


def install() -> None:
    """Put the fixed classes above in place of BentoML's, before its app is built."""
    for media_type, reader in list(serde.ALL_SERDE.items()):
        if reader is serde.MultipartSerde:
            serde.ALL_SERDE[media_type] = ClientErrorMultipartSerde  # type: ignore[index]
        elif reader is serde.JSONSerde:
            serde.ALL_SERDE[media_type] = NoFetchJSONSerde  # type: ignore[index]
    traffic.TimeoutMiddleware = TimerCancellingTimeoutMiddleware
