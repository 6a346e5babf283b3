"""serving/http/guard.py's size limit and bytes-in-flight budget, driven as ASGI in-process (the
served bento is tested over HTTP in test_service.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from serving.http.guard import RequestGuard


async def body_length_app(scope, receive, send) -> None:
    """Reads the whole body, then answers 200 with its length."""
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = json.dumps({"bytes": size}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Request:
    """One request to the guard: its body arrives in `chunks`; when `gated`, each chunk waits
    for a `let_in()`."""

    def __init__(self, chunks: list[bytes], declared: bool = True, gated: bool = False) -> None:
        self.chunks = list(chunks)
        headers = [(b"content-type", b"application/json")]
        if declared:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        self.scope = {"type": "http", "method": "POST", "path": "/classify", "headers": headers}
        self.gated = gated
        self.permits = asyncio.Semaphore(0)
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        if self.gated:
            await self.permits.acquire()
        chunk = self.chunks.pop(0) if self.chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    async def let_in(self, chunks: int = 1) -> None:
        for _ in range(chunks):
            self.permits.release()
        for _ in range(10):  # the app's turns to read them
            await asyncio.sleep(0)

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return next(m["status"] for m in self.sent if m["type"] == "http.response.start")

    @property
    def headers(self) -> dict[bytes, bytes]:
        start = next(m for m in self.sent if m["type"] == "http.response.start")
        return dict(start["headers"])

    @property
    def error(self) -> str:
        body = b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")
        return json.loads(body)[0]["error"]


def run(guard: RequestGuard, request: Request) -> asyncio.Task:
    return asyncio.ensure_future(guard(request.scope, request.receive, request.send))


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_request_holds_its_bytes_until_answered_and_a_second_past_the_budget_gets_503(declared):
    async def scenario():
        guard = RequestGuard(body_length_app, max_request_bytes=1000, max_bytes_in_flight=1000)
        first = Request([b"x" * 400, b"x" * 400], declared=declared, gated=True)
        task = run(guard, first)
        await first.let_in()  # half of its body has arrived
        # Declared, it holds all 800 bytes from the start; chunked, what has arrived.
        assert guard.bytes_in_flight == (800 if declared else 400)
        second = Request([b"y" * 350, b"y" * 350], declared=declared)
        await run(guard, second)
        assert second.status == 503, second.sent
        assert second.headers[b"retry-after"] == b"1"
        assert "bytes of requests in flight" in second.error
        await first.let_in()
        await task
        assert first.status == 200
        assert guard.bytes_in_flight == 0
        third = Request([b"y" * 350, b"y" * 350], declared=declared)
        await run(guard, third)
        assert third.status == 200

    asyncio.run(scenario())


def test_a_lone_request_larger_than_the_budget_is_admitted_within_the_size_limit():
    async def scenario():
        guard = RequestGuard(body_length_app, max_request_bytes=5000, max_bytes_in_flight=1000)
        alone = Request([b"x" * 3000])
        await run(guard, alone)
        assert alone.status == 200
        too_large = Request([b"x" * 6000])
        await run(guard, too_large)
        assert too_large.status == 413
        assert guard.bytes_in_flight == 0

    asyncio.run(scenario())


def test_a_chunked_body_past_the_size_limit_gets_413_and_releases_what_it_held():
    async def scenario():
        guard = RequestGuard(body_length_app, max_request_bytes=1000, max_bytes_in_flight=10_000)
        over = Request([b"x" * 600, b"x" * 600, b"x" * 600], declared=False)
        await run(guard, over)
        assert over.status == 413
        assert "exceeds 1000 bytes" in over.error
        assert guard.bytes_in_flight == 0

    asyncio.run(scenario())


def test_an_app_that_fails_still_releases_its_bytes():
    async def failing_app(scope, receive, send):
        await receive()
        raise RuntimeError("the app failed")

    async def scenario():
        guard = RequestGuard(failing_app, max_request_bytes=1000, max_bytes_in_flight=1000)
        with pytest.raises(RuntimeError):
            await run(guard, Request([b"x" * 500]))
        assert guard.bytes_in_flight == 0

    asyncio.run(scenario())
