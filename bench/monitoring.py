"""What monitoring costs the service: the champion served with `bentoml.monitor` logging every
image (the default) against the same service with monitoring off in BentoML's configuration,
and monitoring on once more as a control, all three up at once and loaded in turns.

Each round loads each server for DURATION_S with one PNG per request at 1 client (latency) and
at 32 clients, and with 64-image requests (PNG uploads and `.npy` files) at 32 clients. The
goal (issue 36): at most 5% fewer requests/s at 32 clients with monitoring on. The logs are
counted afterwards: the servers with monitoring on must hold a record of every image answered.

`python -m bench.monitoring [--repeats N]` prints the table; docs/BENCHMARKS.md is left as is.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import httpx
import pandas as pd

from bench.history import three_digits
from bench.serving import Server, load, request_bodies, workdir
from pipeline.features import MONITOR_NAME

DURATION_S = 3
REPEATS = 12
#: (figure, body, clients): what each round measures on each server.
LOADS = (
    ("x1 p50 ms at 1 client", "classify x1", 1),
    ("x1 requests/s at 32", "classify x1", 32),
    ("x64 requests/s at 32", "classify x64", 32),
    ("npy x64 requests/s at 32", "npy x64", 32),
)
OFF, ON, AGAIN = "monitoring off", "monitoring on", "monitoring on again"


def _overrides(log_path: Path, enabled: bool) -> dict[str, str]:
    monitoring = {"enabled": enabled, "options": {"log_path": str(log_path)}}
    return {
        "BENTOML_CONFIG_OVERRIDES": json.dumps(
            {"services": {"cnn_classifier": {"monitoring": monitoring}}}
        )
    }


def _images_logged(log_path: Path) -> int:
    """Images the log holds records of (each record lists its requests' image counts)."""
    files = (log_path / MONITOR_NAME / "data").glob("data.*.log*")
    return sum(sum(json.loads(line)["images"]) for f in files for line in f.open())


def _cpu(server: Server) -> dict[str, float]:
    """The worker's CPU seconds so far, and its monitoring writer's
    (`cnn_monitoring_write_cpu_seconds_total` on /metrics)."""
    times = server.worker().cpu_times()
    worker = times.user + times.system
    writer = 0.0
    for line in httpx.get(f"{server.url}/metrics", timeout=30).text.splitlines():
        if line.startswith("cnn_monitoring_write_cpu_seconds_total "):
            writer = float(line.split()[-1])
    return {"worker_cpu_s": worker, "writer_cpu_s": writer}


def run(model_tag: str, repeats: int = REPEATS) -> dict:
    work = workdir()
    bodies = request_bodies(work)
    logs = {arm: Path(tempfile.mkdtemp(prefix="bench-monitoring-")) for arm in (OFF, ON, AGAIN)}
    servers: dict[str, Server] = {}
    rows: list[dict] = []
    try:
        for arm, path in logs.items():
            servers[arm] = Server(model_tag, _overrides(path, arm != OFF))
        start = {arm: _cpu(server) for arm, server in servers.items()}
        arms = [ON, OFF, AGAIN]
        for repeat in range(repeats):
            for arm in arms if repeat % 2 == 0 else arms[::-1]:
                row = {"served": arm, "repeat": repeat, "errors": 0, "images": 0}
                for figure, body, clients in LOADS:
                    r = load(servers[arm].url, bodies[body], clients, work, duration_s=DURATION_S)
                    rate = r["requests"] / (r["duration_us"] / 1e6)
                    row[figure] = r["p50_us"] / 1000 if "p50" in figure else rate
                    row["errors"] += r["non_2xx"] + r["socket_errors"]
                    row["images"] += (r["requests"] - r["non_2xx"]) * bodies[body].images
                rows.append(row)
                print(json.dumps(row), flush=True)
        end = {arm: _cpu(server) for arm, server in servers.items()}
        cpu = {arm: {k: end[arm][k] - start[arm][k] for k in end[arm]} for arm in servers}
    finally:
        for server in servers.values():
            server.stop()
    answered = pd.DataFrame(rows).groupby("served")["images"].sum().to_dict()
    return {
        "rows": rows,
        "model_tag": model_tag,
        "repeats": repeats,
        # wrk counts the requests it finished; a request cut at the end of a run may have been
        # answered and logged too, so the log holds at least this many records.
        "images_answered": {arm: int(n) for arm, n in answered.items()},
        "images_logged": {arm: _images_logged(path) for arm, path in logs.items()},
        "cpu": cpu,
    }


def summary(raw: dict) -> pd.DataFrame:
    """Per server: medians over the repeats, and the median of each repeat's figure over the
    same repeat's figure with monitoring off."""
    df = pd.DataFrame(raw["rows"])
    figures = [figure for figure, _, _ in LOADS]
    per = df.set_index(["repeat", "served"])[figures]
    off = per.xs(OFF, level="served").reindex(per.index.droplevel("served"))
    ratios = per.div(off.to_numpy())
    out = per.groupby(level="served").median().reindex([OFF, ON, AGAIN])
    for figure in figures:
        out[f"{figure.split(' at ')[0].replace(' requests/s', '')} / off"] = (
            ratios[figure].groupby(level="served").median()
        )
    out["images logged"] = [raw["images_logged"][arm] for arm in out.index]
    out["images answered"] = [raw["images_answered"][arm] for arm in out.index]
    out["errors"] = df.groupby("served")["errors"].sum()
    cpu = raw.get("cpu")
    if cpu:  # measured since this figure existed
        per_image = pd.Series(
            {arm: cpu[arm]["worker_cpu_s"] / raw["images_answered"][arm] for arm in out.index}
        )
        out["worker CPU us/image"] = (1e6 * per_image).to_numpy()
        out["CPU/image / off"] = (per_image / per_image[OFF]).to_numpy()
    return out.reset_index()


def writer_cost(raw: dict) -> str:
    """The writer threads' CPU time against their workers', in words. The servers share one
    Prometheus folder (BentoML's, under BENTOML_HOME), so the counter each reports is the sum
    over both servers with monitoring on."""
    cpu = raw.get("cpu")
    if not cpu:
        return ""
    writer = cpu[ON]["writer_cpu_s"]
    workers = cpu[ON]["worker_cpu_s"] + cpu[AGAIN]["worker_cpu_s"]
    images = raw["images_logged"][ON] + raw["images_logged"][AGAIN]
    return (
        f"\nOver the rounds, the two workers with monitoring on used {workers:.0f} CPU-seconds, "
        f"of which their monitoring writers (`cnn_monitoring_write_cpu_seconds_total`) used "
        f"{writer:.2f}: **{writer / workers:.1%} of the workers' CPU**, "
        f"{1e6 * writer / images:.1f} us per image logged; the endpoint itself only queues each "
        "request. `worker CPU us/image` is each worker's CPU time over the rounds per image it "
        "answered (each server got the same loads for the same time). At one image per request "
        "the requests/s ratios over monitoring off spread as widely as the two identical "
        "servers with it on differ from each other; the CPU per image is the steadier figure "
        "of what monitoring costs.\n"
    )


def render(raw: dict) -> str:
    table = summary(raw)
    return f"""## Monitoring: what it costs

`bench/monitoring.py` (`make bench WHAT=monitoring`, measured {raw.get("date", "")}). The
champion, `{raw["model_tag"]}`, served three times at once, one worker each: with
`bentoml.monitor` logging every image (the default, serving/monitoring.py), with monitoring off
in BentoML's configuration (`"monitoring": {{"enabled": false}}`), and with it on again as a
control. {raw["repeats"]} rounds, the servers in turns (reversed every other round); each round
loads each server for {DURATION_S} s per figure. Figures are medians over the rounds; `/ off`
is the median of each round's figure over the same round's figure with monitoring off (for
the p50, above 1 is slower). The goal is at most 5% fewer requests/s at 32 clients with
monitoring on. "images logged" counts the images in each server's log afterwards: every
image answered (at least the images wrk counted; none with monitoring off).

{three_digits(table).to_markdown(index=False)}
{writer_cost(raw)}"""


def main(argv: list[str]) -> None:
    from bench.run import champion_tag

    repeats = REPEATS
    if argv[:1] == ["--repeats"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            raise SystemExit("bench.monitoring: --repeats takes a whole number of at least 1")
        repeats = int(argv[1])
    raw = run(champion_tag(), repeats)
    print(three_digits(summary(raw)).to_markdown(index=False))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
