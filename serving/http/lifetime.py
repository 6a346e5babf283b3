"""How long a request's work lasts: until its response starts, its time is up, or its client
hangs up.

BentoML's timeout middleware answers 504 when no response has started in time. It wraps every
request, so it is where each request's handler runs as a task of its own, and the one place
that can stop that task without touching the code around it. `RequestLifetime` replaces it
(`install()`) and adds two things:

- **Its timer is cancelled as soon as the response starts.** BentoML's never is, so every
  request's future and context (its OpenTelemetry span and more) stayed reachable for the whole
  timeout; under load that is hundreds of thousands of live objects for Python's full garbage
  collections to walk (tests/test_http_layer.py pins BentoML's behaviour).
- **A client that hangs up before its answer stops its request's work.** uvicorn does not
  cancel a request whose connection closed, and a handler that never reads again never learns
  of it, so a burst's clients that gave up left their requests queued for the model. The
  worker's HTTP protocol (serving/http/connections.py) puts a future in each request's scope
  (`CLIENT_GONE`, an ASGI extension) and resolves it when the connection is lost before the
  answer is complete. If that comes before the response has started, the handler task is
  cancelled: its images leave the model's queue (serving/batching.py), and the request is
  answered 499 (nginx's "client closed request"), which BentoML's access log and request
  metrics record. A client that leaves while its body is still being read is answered the
  same way, and the app is never handed the `http.disconnect` (Starlette would raise on it and
  BentoML answer a 500 to nobody, with a traceback in the log).

Watching costs a callback on a future per request, not a task per request.
"""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http import traffic

#: nginx's status for a request whose client closed the connection before the answer.
CLIENT_CLOSED_REQUEST = 499


#: The ASGI scope extension under which serving/http/connections.py gives each request a future,
#: resolved when the client hangs up before the request's answer is complete.
CLIENT_GONE = "cnn.client_gone"


class _ClientLeft(Exception):
    """Set on a request's waiter when its client hangs up before the response starts."""


class _DisconnectWatch:
    """The app's `receive`, watched: a client that hangs up before the response starts fails
    the request's `waiter`, whether the protocol's future says so (`client_gone`) or the app
    reads an `http.disconnect`. The app is never handed that message (it would answer a 500 to
    nobody): it waits in `receive` until RequestLifetime cancels it."""

    def __init__(self, receive, waiter: asyncio.Future) -> None:
        self._receive = receive
        self._waiter = waiter
        #: The client hung up before the response started.
        self.client_left = False

    async def receive(self) -> dict:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.client_gone()
            if self.client_left:  # RequestLifetime cancels this task while it waits here
                await asyncio.get_running_loop().create_future()
        return message

    def client_gone(self, _: asyncio.Future | None = None) -> None:
        if not self._waiter.done():  # not once the response has started or the time is up
            self.client_left = True
            self._waiter.set_exception(_ClientLeft())


class RequestLifetime(traffic.TimeoutMiddleware):
    """BentoML's request timeout (504 when no response has started in time) with its timer
    cancelled once the response starts, and 499 with the handler cancelled when the client
    hangs up first."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)
        watch = _DisconnectWatch(receive, waiter) if scope["type"] == "http" else None
        gone = scope.get("extensions", {}).get(CLIENT_GONE) if watch else None
        if gone is not None:
            gone.add_done_callback(watch.client_gone)

        async def _send(message) -> None:
            if not waiter.done():
                waiter.set_result(None)
                timer.cancel()
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, watch.receive if watch else receive, _send))
        #: What to answer in the handler's place: (status, error), when it is cancelled.
        instead: tuple[int, str] | None = None
        try:
            await waiter
        except TimeoutError:
            instead = 504, f"Not able to process the request in {self.timeout} seconds"
        except _ClientLeft:
            instead = CLIENT_CLOSED_REQUEST, "the client closed the connection before the answer"
        else:
            await handler
        finally:
            timer.cancel()
            if gone is not None:
                gone.remove_done_callback(watch.client_gone)
        if instead is not None and handler.cancel():
            status, error = instead
            await traffic.JSONResponse({"error": error}, status_code=status)(scope, receive, send)


def install() -> None:
    """BentoML builds each app with `traffic.TimeoutMiddleware`: make that this class."""
    traffic.TimeoutMiddleware = RequestLifetime
