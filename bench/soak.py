"""Ten minutes at half the measured capacity: errors, and the service worker's memory over time.

Capacity is `/classify` with one PNG at 32 clients. The soak's 8 clients each pause between
requests (wrk's `delay` hook) so that together they send about half that rate; the pause is
calibrated once on a short run.
"""

from __future__ import annotations

import json
import time

from bench.serving import Server, load, request_bodies, workdir

DURATION_S = 600
CHUNK_S = 60
CLIENTS = 8
CAPACITY_CLIENTS = 32


def run(model_tag: str) -> dict:
    work = workdir()
    body = request_bodies(work)["classify x1"]
    server = Server(model_tag)
    try:
        full = load(server.url, body, CAPACITY_CLIENTS, work, duration_s=5)
        capacity = full["requests"] / (full["duration_us"] / 1e6)
        target = capacity / 2
        # Each client's cycle is its pause plus the request's latency; the trial measures the
        # latency at about the target rate, and the pause is set again from it.
        delay_ms = 1000 * CLIENTS / target
        trial = load(server.url, body, CLIENTS, work, duration_s=5, delay_ms=delay_ms)
        latency_ms = 1000 * CLIENTS / (trial["requests"] / (trial["duration_us"] / 1e6)) - delay_ms
        delay_ms = max(0.1, 1000 * CLIENTS / target - latency_ms)
        rss_start = server.worker_rss_mib()
        minutes, start = [], time.perf_counter()
        while time.perf_counter() - start < DURATION_S:
            r = load(server.url, body, CLIENTS, work, duration_s=CHUNK_S, delay_ms=delay_ms)
            minutes.append(
                {
                    "minute": len(minutes) + 1,
                    "requests": r["requests"],
                    "requests_per_s": r["requests"] / (r["duration_us"] / 1e6),
                    "p50_ms": r["p50_us"] / 1000,
                    "p99_ms": r["p99_us"] / 1000,
                    "errors": r["non_2xx"] + r["socket_errors"],
                    "worker_rss_mib": server.worker_rss_mib(),
                }
            )
            print(json.dumps(minutes[-1]), flush=True)
    finally:
        server.stop()
    rss_end = minutes[-1]["worker_rss_mib"]
    return {
        "capacity_requests_per_s": capacity,
        "target_requests_per_s": target,
        "delay_ms": delay_ms,
        "clients": CLIENTS,
        "seconds": time.perf_counter() - start,
        "requests": sum(m["requests"] for m in minutes),
        "errors": sum(m["errors"] for m in minutes),
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": rss_end / rss_start - 1,
        "minutes": minutes,
    }


def render(soak: dict) -> str:
    import pandas as pd

    minutes = pd.DataFrame(soak["minutes"]).round(2)
    return f"""## Soak: {soak["seconds"] / 60:.0f} minutes at half capacity

`bench/soak.py`, on {soak["machine"]["cores"]} cores ({soak["machine"]["cpu"]}). The
champion on one worker (eager batcher). Capacity, `/classify` with one
PNG at {CAPACITY_CLIENTS} clients for 5 s: {soak["capacity_requests_per_s"]:.0f} requests/s.
{soak["clients"]} clients then pause {soak["delay_ms"]:.1f} ms between requests to send about
{soak["target_requests_per_s"]:.0f} requests/s for {soak["seconds"]:.0f} s, in {CHUNK_S} s runs;
the service worker's resident memory is read after each.

Aim: 0 errors and the worker's RSS grows by less than 5%. **{soak["requests"]:,} requests,
{soak["errors"]} errors; RSS {soak["rss_start_mib"]:.0f} MiB at the start, {
        soak["rss_end_mib"]:.0f} MiB at the end ({100 * soak["rss_growth"]:+.1f}%).**

{minutes.to_markdown(index=False)}
"""
