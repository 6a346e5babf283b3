"""Stalls and faults: health checks during a flood of large images, and a worker killed
mid-burst.

Stalls: the champion served twice side by side, large images decoded in a process of their
own (the shipped service, serving/decoding.py) and on the event loop (the `decode-on-loop`
variant, bench/variants.py), each sent floods of 4-megapixel PNGs while a separate process
probes `/livez` and `/readyz` (bench/health_probe.py). The same
servers time one large and one small image at a time: what the process hop costs.

Fault: 8 clients send one-PNG requests; after 3 s the service worker gets SIGKILL. BentoML's
arbiter starts a new one on the same listening socket. Counted: the requests in flight that
fail, whether any client hangs, how long until answers come again, and whether every request
sent after the kill is answered.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import statistics
import threading
import time

import httpx
import numpy as np

from bench.health_probe import HealthProbe, large_png
from bench.serving import Server, as_pngs, fashion_test_images

FLOOD_CLIENTS = 16
FLOOD_REQUESTS = 48
REPEATS = 3
#: Decoding on the loop: no request has this many pixels.
FAULT_CLIENTS = 8
KILL_AFTER_S = 3.0
CLIENT_TIMEOUT_S = 60.0


def _files(png: bytes) -> list:
    return [("images", ("image.png", png, "image/png"))]


def _flood(url: str, png: bytes) -> dict:
    with (
        HealthProbe(int(url.rsplit(":", 1)[1])) as probe,
        httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client,
        concurrent.futures.ThreadPoolExecutor(FLOOD_CLIENTS) as pool,
    ):
        start = time.perf_counter()
        sent = [
            pool.submit(client.post, "/classify", files=_files(png)) for _ in range(FLOOD_REQUESTS)
        ]
        statuses = [f.result().status_code for f in sent]
        seconds = time.perf_counter() - start
    latencies = sorted(probe.latencies_ms)
    return {
        "health_p50_ms": statistics.median(latencies),
        "health_p99_ms": latencies[int(0.99 * (len(latencies) - 1))],
        "health_max_ms": latencies[-1],
        "probes": len(latencies),
        "probe_errors": len(probe.errors),
        "large_images_per_s": FLOOD_REQUESTS / seconds,
        "errors": sum(s != 200 for s in statuses),
    }


def _one_at_a_time(url: str, png: bytes, count: int) -> float:
    """Median latency (ms) of `count` sequential requests of one image."""
    times = []
    with httpx.Client(base_url=url, timeout=CLIENT_TIMEOUT_S) as client:
        for _ in range(count):
            start = time.perf_counter()
            assert client.post("/classify", files=_files(png)).status_code == 200
            times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def stalls(model_tag: str) -> list[dict]:
    big, small = large_png(), as_pngs(fashion_test_images(1))[0]
    rows = []
    for label, variant in (("process (default)", None), ("event loop", "decode-on-loop")):
        server = Server(model_tag, variant=variant)
        try:
            _one_at_a_time(server.url, big, 3)  # warm-up
            floods = [_flood(server.url, big) for _ in range(REPEATS)]
            row = {"large images decoded in": label}
            for key in floods[0]:
                row[key] = statistics.median(f[key] for f in floods)
            row["health_max_ms"] = max(f["health_max_ms"] for f in floods)  # the worst of all
            row["errors"] = sum(f["errors"] + f["probe_errors"] for f in floods)
            row["one large image, p50 ms"] = _one_at_a_time(server.url, big, 20)
            row["one small image, p50 ms"] = _one_at_a_time(server.url, small, 50)
        finally:
            server.stop()
        print(row, flush=True)
        rows.append(row)
    return rows


def fault(model_tag: str) -> dict:
    """8 clients, SIGKILL to the service worker after 3 s, until 10 s after answers resume."""
    png = as_pngs(fashion_test_images(1))[0]
    server = Server(model_tag)
    log: list[tuple[float, float, str]] = []  # (sent, finished, outcome)
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S) as c:
            while not stop.is_set():
                sent = time.perf_counter()
                try:
                    outcome = str(c.post("/classify", files=_files(png)).status_code)
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                with lock:
                    log.append((sent, time.perf_counter(), outcome))

    try:
        threads = [threading.Thread(target=client, daemon=True) for _ in range(FAULT_CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(KILL_AFTER_S)
        worker = server.worker()
        decoders = [p for p in worker.children() if "spawn_main" in " ".join(p.cmdline())]
        killed_at = time.perf_counter()
        os.kill(worker.pid, signal.SIGKILL)
        while True:
            time.sleep(0.5)
            with lock:
                back = [f for s, f, o in log if s > killed_at and o == "200"]
            if back and time.perf_counter() - min(back) > 10:
                break
            if time.perf_counter() - killed_at > 300:
                break
        stop.set()
        for thread in threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 10)
        hung = sum(thread.is_alive() for thread in threads)
        time.sleep(1)
        orphans = sum(p.is_running() and p.status() != "zombie" for p in decoders)
    finally:
        server.stop()
    in_flight = [e for e in log if e[0] <= killed_at < e[1]]
    after = [e for e in log if e[0] > killed_at]
    resumed = min(f for s, f, o in after if o == "200") - killed_at if after else float("nan")
    durations = np.array([f - s for s, f, _ in log])
    return {
        "clients": FAULT_CLIENTS,
        "requests": len(log),
        "before_kill_ok": sum(o == "200" for s, f, o in log if f < killed_at),
        "in_flight_at_kill": len(in_flight),
        "in_flight_failed": sum(o != "200" for *_, o in in_flight),
        "in_flight_outcomes": sorted({o for *_, o in in_flight}),  # "200" if one was answered
        "sent_after_kill": len(after),
        "sent_after_kill_failed": sum(o != "200" for *_, o in after),
        # (seconds after the kill it was sent, outcome) of each: a client whose request was
        # answered just before the kill sends its next one on a connection the dead worker held.
        "sent_after_kill_failures": [(s - killed_at, o) for s, _, o in after if o != "200"],
        "answers_resumed_after_s": resumed,
        "longest_request_s": float(durations.max()),
        "hung_clients": hung,
        "orphaned_decoding_processes": orphans,
    }


def run(model_tag: str) -> dict:
    return {"stalls": stalls(model_tag), "fault": fault(model_tag)}


def _in_flight(fault: dict) -> str:
    failed = [o for o in fault["in_flight_outcomes"] if o != "200"]
    answered = fault["in_flight_at_kill"] - fault["in_flight_failed"]
    return (
        f"Of the {fault['in_flight_at_kill']} requests in flight at the kill, "
        f"{fault['in_flight_failed']} failed ({', '.join(failed)}: the connection closed without "
        "an answer)" + (f"; {answered} was answered as the kill landed." if answered else ".")
    )


def _failures_after(fault: dict) -> str:
    failures = fault.get("sent_after_kill_failures", [])
    if not failures:
        return ""
    listed = ", ".join(
        f"{outcome}, sent {1000 * after:.0f} ms after the kill" for after, outcome in failures
    )
    return (
        f" ({listed}: sent on a keep-alive connection that the killed worker held, by a client"
        " whose previous request was answered just before the kill)"
    )


def render(faults: dict) -> str:
    import pandas as pd

    table = pd.DataFrame(faults["stalls"]).rename(
        columns={
            "health_p50_ms": "health check p50 ms",
            "health_p99_ms": "health check p99 ms",
            "health_max_ms": "health check worst ms",
            "large_images_per_s": "large images/s",
        }
    )
    columns = [
        "large images decoded in",
        "health check p50 ms",
        "health check p99 ms",
        "health check worst ms",
        "probes",
        "large images/s",
        "one large image, p50 ms",
        "one small image, p50 ms",
        "errors",
    ]
    f = faults["fault"]
    machine = faults["machine"]
    return f"""## Stalls and faults (`make bench WHAT=faults`, measured {faults["date"]})

`bench/faults.py`, on {machine["cores"]} cores ({machine["cpu"]}), the champion on one worker.

**Decode flood.** {FLOOD_REQUESTS} requests of one 4-megapixel PNG each, {FLOOD_CLIENTS} at a
time, {REPEATS} floods per server, while a separate process opens a connection to `/livez`
or `/readyz`, in turn, every 10 ms. The two servers differ only in where large images are
decoded. Medians over the floods, except the worst health check, which is the worst of all.
The last two columns time one request at a time: one large image (the process hop's cost) and
one 28x28 PNG (always decoded on the loop). Aim: both health checks within 100 ms during the flood.

{table[columns].round(1).to_markdown(index=False)}

**Worker killed mid-burst.** {f["clients"]} clients send one-PNG requests; after
{KILL_AFTER_S:.0f} s the service worker gets SIGKILL, and BentoML's arbiter starts another on
the same socket. {f["requests"]:,} requests in all. {_in_flight(f)} Of the
{f["sent_after_kill"]:,} sent after it, **{f["sent_after_kill_failed"]} failed**{
        _failures_after(f)
    }. The others, sent while no worker ran, waited in the listening socket's queue and were
answered once the new worker was up, {f["answers_resumed_after_s"]:.1f} s after the kill
(TensorFlow's import and the model's load). Longest request: {f["longest_request_s"]:.1f} s;
clients left hanging: {f["hung_clients"]}; decoding processes of the killed worker still
running 1 s later: {f["orphaned_decoding_processes"]}.
"""
