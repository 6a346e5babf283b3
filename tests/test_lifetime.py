"""serving/http/lifetime.py on a real uvicorn server on 127.0.0.1, with the worker's HTTP protocol
(serving/http/connections.py): a request whose client hangs up before its answer has its handler
cancelled and is recorded as 499; every other request runs to its end as before. (The whole
service over HTTP: tests/test_service.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from serving.http.connections import HeaderTimeoutProtocol
from serving.http.lifetime import CLIENT_CLOSED_REQUEST, RequestLifetime

BODY = b"x" * 50_000


class Recorder:
    """An ASGI app behind RequestLifetime, as BentoML stacks them: what the handler saw and how
    it ended, and the statuses that reached the middleware outside (the access log's view)."""

    def __init__(self) -> None:
        self.ended: dict[str, str] = {}
        self.messages: dict[str, list[str]] = {}
        self.statuses: dict[str, int] = {}
        self.done = threading.Event()
        self.lifetime = RequestLifetime(self.handler, timeout=30)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]

        async def outer_send(message) -> None:
            if message["type"] == "http.response.start":
                self.statuses[path] = message["status"]
            await send(message)

        await self.lifetime(scope, receive, outer_send)

    async def handler(self, scope, receive, send) -> None:
        path = scope["path"]
        seen = self.messages.setdefault(path, [])
        try:
            more = True
            while more:  # the whole body, as BentoML reads it
                message = await receive()
                seen.append(message["type"])
                more = message.get("more_body", False)
            if path == "/wait":  # a model call that takes long
                await asyncio.sleep(20)
            elif path == "/started":  # the answer has begun before the client leaves
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await asyncio.sleep(0.5)
                await send({"type": "http.response.body", "body": b"late"})
                self.ended[path] = "completed"
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            self.ended[path] = "completed"
        except asyncio.CancelledError:
            self.ended[path] = "cancelled"
            raise
        finally:
            self.done.set()

    def wait_for(self, path: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while path not in self.ended and time.monotonic() < deadline:
            self.done.wait(0.05)
            self.done.clear()
        return self.ended.get(path, "still running")


@pytest.fixture
def server() -> Iterator[tuple[Recorder, int]]:
    app = Recorder()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        loop="asyncio",
        http=HeaderTimeoutProtocol,
        log_level="warning",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield app, port
    finally:
        server.should_exit = True
        thread.join(10)


def _request(path: str, body: bytes = BODY) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@contextlib.contextmanager
def _connection(port: int) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def test_a_client_that_hangs_up_while_its_request_waits_cancels_it_as_499(server):
    app, port = server
    with _connection(port) as sock:
        sock.sendall(_request("/wait"))
        time.sleep(0.3)  # the body is read; the handler waits
        assert app.ended == {}
    assert app.wait_for("/wait") == "cancelled"
    assert app.statuses["/wait"] == CLIENT_CLOSED_REQUEST
    assert "http.disconnect" not in app.messages["/wait"]  # cancelled, never told


def test_a_client_that_hangs_up_during_its_body_cancels_the_read_as_499(server):
    app, port = server
    with _connection(port) as sock:
        sock.sendall(_request("/read")[: len(BODY) // 2])
        time.sleep(0.3)
    assert app.wait_for("/read") == "cancelled"
    assert app.statuses["/read"] == CLIENT_CLOSED_REQUEST
    # The app would have raised on this message (Starlette: ClientDisconnect, a 500).
    assert "http.disconnect" not in app.messages["/read"]


def test_answered_requests_run_to_their_end_on_a_kept_alive_connection(server):
    app, port = server
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for _ in range(3):  # the watch of one request does not touch the next one's
            connection.request("POST", "/answer", body=BODY)
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"ok")
    finally:
        connection.close()
    assert app.wait_for("/answer") == "completed"
    # Each body whole, in one message or more (as the socket delivered it), and no disconnect.
    assert set(app.messages["/answer"]) == {"http.request"}
    assert len(app.messages["/answer"]) >= 3


def test_a_client_that_leaves_after_its_answer_started_does_not_cancel_it(server):
    app, port = server
    with _connection(port) as sock:
        sock.sendall(_request("/started"))
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    assert app.wait_for("/started") == "completed"
    assert app.statuses["/started"] == 200
