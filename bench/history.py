"""Latency at 1 client on a fresh server, right after bursts, and after 10 s idle: the shipped
service's eager batcher against BentoML's CORK dispatcher (bench/variants.py), one server of
each per repeat, in turns.

A burst lasts longer than the 5 s after which CORK refreshes what it learned from recent
batches, so each burst can leave its mark; the probe right after it shows whether it did.
Before each probe, one request alone is timed from the moment the burst's clients stop: it
waits behind whatever the server still does for them (serving/http/lifetime.py drops the
work of those that hung up).

This host's speed drifts by tens of percent within a minute, so a p50 after a burst over the
fresh p50 a minute before mixes the server's history with the host's. Each repeat therefore
also starts an untouched server of the same batcher, which gets no bursts: it is probed
beside the burst server in every phase, and `/ untouched` is the burst server's p50 over the
untouched one's at the same moment, the host's drift taken out.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pandas as pd

from bench.serving import Server, load, request_bodies, workdir

#: (label, clients, request body) of each burst, in the order they run.
BURSTS = (
    ("32 clients x 1 image", 32, "classify x1"),
    ("64 clients x 1 image", 64, "classify x1"),
    ("32 clients x 64 images", 32, "classify x64"),
    ("64 clients x 64 images", 64, "classify x64"),
)
BURST_S = 6
PROBE_S = 3
IDLE_S = 10
REPEATS = 3
#: Each batcher, and the variant of bench/variants.py that serves it (None: the shipped one).
BATCHERS = {"eager": None, "cork": "cork"}
#: What a probe sends, one client at a time.
PROBES = ("classify x1", "array x1")


def first_answer_ms(server_url: str, body) -> float:
    """Milliseconds for one request of `body`, sent alone on a new connection."""
    request = urllib.request.Request(
        server_url + body.route, data=body.path.read_bytes(), method="POST"
    )
    request.add_header("Content-Type", body.content_type)
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def _probe(servers: dict[str, Server], bodies, work, **labels) -> list[dict]:
    """The lone request on the burst server, then each probe on every server in turn (the
    burst server first in even repeats, the untouched one first in odd ones, so that neither
    always gets the moment right after a burst): one row each, with `labels` (batcher,
    repeat, phase)."""
    first = first_answer_ms(servers["bursted"].url, bodies[PROBES[0]])
    order = list(servers.items())
    if labels["repeat"] % 2:
        order.reverse()
    rows = []
    for name in PROBES:
        for role, server in order:
            r = load(server.url, bodies[name], 1, work, duration_s=PROBE_S)
            rows.append(
                {
                    **labels,
                    "server": role,
                    "probe": name,
                    "p50_ms": r["p50_us"] / 1000,
                    "requests_per_s": r["requests"] / (r["duration_us"] / 1e6),
                    "errors": r["non_2xx"] + r["socket_errors"],
                    **({"first_ms": first} if name == PROBES[0] and role == "bursted" else {}),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def run(model_tag: str) -> list[dict]:
    """One row per (repeat, batcher, server, phase, probe) with the probe's p50 and rate;
    `server` is `bursted` (the server the bursts hit) or `untouched` (probed beside it)."""
    work = workdir()
    bodies = request_bodies(work)
    rows: list[dict] = []
    for repeat in range(REPEATS):
        order = list(BATCHERS) if repeat % 2 == 0 else list(BATCHERS)[::-1]
        for batcher in order:
            variant = BATCHERS[batcher]
            servers = {"bursted": Server(model_tag, variant=variant)}
            try:
                servers["untouched"] = Server(model_tag, variant=variant)
                labels = {"batcher": batcher, "repeat": repeat}
                rows += _probe(servers, bodies, work, **labels, phase="fresh")
                for label, clients, body in BURSTS:
                    url = servers["bursted"].url
                    burst = load(url, bodies[body], clients, work, duration_s=BURST_S)
                    if burst["non_2xx"] + burst["socket_errors"]:
                        print(f"{batcher}: errors in the burst {label}: {burst}", flush=True)
                    rows += _probe(servers, bodies, work, **labels, phase=f"after {label}")
                time.sleep(IDLE_S)
                phase = f"after the last burst and {IDLE_S} s idle"
                rows += _probe(servers, bodies, work, **labels, phase=phase)
            finally:
                for server in servers.values():
                    server.stop()
    return rows


def summary(rows: list[dict]) -> pd.DataFrame:
    """Per probe and phase: each batcher's median p50 over the repeats, and the median over
    the repeats of its p50 over its own fresh p50 in that repeat."""
    df = pd.DataFrame(rows)
    if "server" not in df:  # figures from before the untouched server
        df["server"] = "bursted"
    index = ["probe", "phase", "repeat"]
    by_server = {
        role: group.pivot_table(index=index, columns="batcher", values="p50_ms")
        for role, group in df.groupby("server")
    }
    p50 = by_server["bursted"]
    fresh = p50.xs("fresh", level="phase")
    parts = [
        p50.groupby(level=["probe", "phase"], sort=False).median().add_suffix(" p50 ms"),
        p50.div(fresh.reindex(p50.index.droplevel("phase")).to_numpy())
        .groupby(level=["probe", "phase"], sort=False)
        .median()
        .add_suffix(" / fresh"),
    ]
    suffixes = [" p50 ms", " / fresh"]
    if "untouched" in by_server:
        parts.append(
            p50.div(by_server["untouched"].reindex(p50.index))
            .groupby(level=["probe", "phase"], sort=False)
            .median()
            .add_suffix(" / untouched")
        )
        suffixes.append(" / untouched")
    out = pd.concat(parts, axis=1)
    order = list(dict.fromkeys(df.phase))
    out = out.reset_index()
    out["phase"] = pd.Categorical(out.phase, order, ordered=True)
    out["probe"] = pd.Categorical(out.probe, PROBES, ordered=True)
    columns = [f"{b}{suffix}" for suffix in suffixes for b in BATCHERS]
    return out.sort_values(["probe", "phase"])[["probe", "phase", *columns]]


def first_answers(rows: list[dict]) -> pd.DataFrame:
    """Per phase: each batcher's median over the repeats of the lone request's milliseconds."""
    df = pd.DataFrame(rows).dropna(subset=["first_ms"])
    table = df.pivot_table(index="phase", columns="batcher", values="first_ms", aggfunc="median")
    table = table.reindex(list(dict.fromkeys(df.phase)))[list(BATCHERS)]
    return table.add_suffix(" first answer ms").reset_index()


FIRST = """
Before each probe one PNG was sent alone on a new connection, timed from the moment the burst's
clients stopped: it waits behind whatever the server still does for them. A client that hangs
up before its answer has its request cancelled and its images dropped from the queue
(serving/http/lifetime.py); medians over the repeats:

{}
"""


def render(raw: dict | list[dict]) -> str:
    """The section from `{"rows": ..., "date": ...}`, or from the rows alone (figures from
    before the section named its own date)."""
    rows = raw["rows"] if isinstance(raw, dict) else raw
    measured = f" Measured {raw['date']}." if isinstance(raw, dict) else ""
    table = summary(rows)
    # Figures from before the lone request was timed have no first_ms.
    first = ""
    if any("first_ms" in row for row in rows):
        first = FIRST.format(three_digits(first_answers(rows)).to_markdown(index=False))
    after = table[(table.probe == "classify x1") & (table.phase != "fresh")]
    worst = after.loc[after["eager / fresh"].idxmax()]
    aim = (
        f"Eager, worst phase ({worst.phase}): **{worst['eager / fresh']:.2f}x** the fresh p50, "
        f"**{worst['eager p50 ms']:.2f} ms**."
    )
    untouched = ""
    if "eager / untouched" in table:
        beside = after.loc[after["eager / untouched"].idxmax()]
        aim += (
            f" Against the untouched server probed beside it, worst phase ({beside.phase}): "
            f"**{beside['eager / untouched']:.2f}x**."
        )
        untouched = (
            "\n\nEach repeat also starts an untouched server of the same batcher, which gets no"
            " bursts: it is probed\nbeside the burst server in every phase, the two in turns."
            " `/ untouched` is the median of the burst\nserver's p50 over the untouched one's"
            " at the same moment, which takes the host's drift out."
        )
    return f"""## Latency after load: the eager batcher against BentoML's CORK

`bench/history.py`. The champion on one worker, {REPEATS} repeats, each on a fresh server per
batcher, the two batchers in turns: the shipped service's eager batcher, and CORK served by the
`cork` variant (bench/variants.py). A probe is 1 client for {PROBE_S} s
with one PNG (`classify x1`) and then one image as JSON (`array x1`); it runs on the fresh
server, right after each {BURST_S} s burst (longer than the 5 s after which CORK refreshes what
it learned), and after {IDLE_S} s idle. p50 are medians over the repeats; `/ fresh` is the
median of each repeat's p50 over the same server's fresh p50.{measured}{untouched}

Aim: one PNG at 1 client after any burst within 1.25x the fresh p50 and at most 5 ms. {aim}

{three_digits(table).to_markdown(index=False)}
{first}"""


def three_digits(df: pd.DataFrame) -> pd.DataFrame:
    """Floats to three significant digits, for the after-load and model-call tables."""
    return df.map(lambda v: f"{v:.3g}" if isinstance(v, float) else v)
