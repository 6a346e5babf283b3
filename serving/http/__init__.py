"""The service's HTTP layer: every change to BentoML's or uvicorn's own behaviour, in one place.

serving/SERVICE.md ("The HTTP layer") has a row for each module here: what it changes, the
public behaviour that buys, and the tests that show it. Four of them replace or extend a
private part of BentoML or uvicorn (`serde`, `lifetime`, `connections`, `tracing`); the other
two use public interfaces only (`guard` is ASGI middleware, `uploads` a pydantic type).

`install()` puts the replacements in place before BentoML builds its app, and refuses, in one
line, a BentoML or uvicorn other than the versions they were written against: each reads
internals that any release may change without notice.
"""

from __future__ import annotations

from importlib.metadata import version

from serving.http import connections, lifetime, serde

#: The versions the replacements were written and tested against (requirements.lock).
PINNED = {"bentoml": "1.4.39", "uvicorn": "0.54.0"}


def check_versions(installed: dict[str, str] | None = None) -> None:
    """SystemExit naming what to do when an installed version is not the pinned one."""
    installed = installed or {name: version(name) for name in PINNED}
    wrong = {name: v for name, v in installed.items() if v != PINNED[name]}
    if wrong:
        found = ", ".join(f"{name} {v}" for name, v in wrong.items())
        want = ", ".join(f"{name}=={PINNED[name]}" for name in wrong)
        raise SystemExit(
            f"serving/http patches internals of {want} but found {found}: install "
            "requirements.lock (make setup), or check each patch against the new version "
            "(serving/SERVICE.md, The HTTP layer) and update serving/http/__init__.PINNED"
        )


def install(header_timeout_s: float) -> None:
    """Check the versions, then install the request readers, the request lifetime and the
    worker's HTTP protocol with this header timeout."""
    check_versions()
    serde.install()
    lifetime.install()
    connections.install(header_timeout_s)
