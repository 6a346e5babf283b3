"""The HTTP layer (serving/http/) in process: the request lifetime's timer, the version check
that guards every patch, and serving/heap.py. (Over HTTP: tests/test_service.py.)

The first test pins BentoML 1.4.39's bug: when it fails, BentoML has fixed it and the
replacement can go.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from bentoml._internal.server.http import traffic

from serving import http as http_layer
from serving.heap import freeze_startup_objects
from serving.http import lifetime
from serving.http.lifetime import RequestLifetime

BENTOML_TIMEOUT_MIDDLEWARE = traffic.TimeoutMiddleware


async def _answer(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _too_slow(scope, receive, send) -> None:
    await asyncio.sleep(30)
    await _answer(scope, receive, send)


def _serve_once(middleware_class, app, timeout: float) -> tuple[list[dict], int]:
    """Run one request through the middleware: (messages sent, live timers left after it)."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    async def main() -> int:
        middleware = middleware_class(app, timeout=timeout)
        await middleware({"type": "http", "path": "/x"}, receive, send)
        for _ in range(3):  # let a cancelled handler unwind (and drop its own timers)
            await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        return sum(not handle.cancelled() for handle in loop._scheduled)

    return sent, asyncio.run(main())


def test_bentoml_timeout_middleware_keeps_a_timer_alive_after_the_response():
    sent, live_timers = _serve_once(BENTOML_TIMEOUT_MIDDLEWARE, _answer, timeout=60)
    assert sent[0]["status"] == 200
    assert live_timers == 1  # holds the request's future and context for 60 s


def test_fixed_timeout_middleware_answers_and_leaves_no_timer():
    sent, live_timers = _serve_once(RequestLifetime, _answer, 60)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"ok"
    assert live_timers == 0


def test_fixed_timeout_middleware_still_answers_504_when_too_slow():
    sent, live_timers = _serve_once(RequestLifetime, _too_slow, 0.05)
    assert sent[0]["status"] == 504
    assert b"Not able to process the request in 0.05 seconds" in sent[1]["body"]
    assert live_timers == 0


def test_install_replaces_the_timeout_middleware_bentoml_builds_apps_with():
    lifetime.install()
    try:
        assert traffic.TimeoutMiddleware is RequestLifetime
    finally:
        traffic.TimeoutMiddleware = BENTOML_TIMEOUT_MIDDLEWARE


def test_the_pinned_versions_are_the_installed_ones():
    http_layer.check_versions()  # what a start-up of the service runs first


@pytest.mark.parametrize(
    "installed",
    [{"bentoml": "1.4.40", "uvicorn": "0.54.0"}, {"bentoml": "1.4.39", "uvicorn": "0.40.0"}],
)
def test_another_bentoml_or_uvicorn_is_refused_in_one_line_that_says_what_to_do(installed):
    with pytest.raises(SystemExit) as stop:
        http_layer.check_versions(installed)
    message = str(stop.value)
    wrong = next(name for name, v in installed.items() if v != http_layer.PINNED[name])
    assert "\n" not in message
    assert f"{wrong}=={http_layer.PINNED[wrong]}" in message and installed[wrong] in message
    assert "requirements.lock" in message


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def test_freeze_startup_objects_exempts_what_is_alive_now(unfrozen):
    gc.unfreeze()
    survivor: list[int] = []  # a container: the collector tracks it
    assert any(o is survivor for o in gc.get_objects())
    frozen = freeze_startup_objects()
    assert frozen > 10_000 and gc.get_freeze_count() > 10_000  # pytest, numpy, bentoml...
    assert not any(o is survivor for o in gc.get_objects())  # out of the collector's reach
