"""Serving choices side by side: the champion served as the defaults serve it (every view its
model averages, batch norm folded, the traced model call, uvloop) against fewer views
(`SERVING_VIEWS=flip`, `one`), TensorFlow's fused and Keras' own batch norm
(`SERVING_BATCH_NORM=fused`, `keras`), Keras' `predict_on_batch` (`SERVING_MODEL_CALL=keras`),
asyncio's event loop, BentoML's request tracing and access log (`SERVING_TRACING=on`,
`SERVING_ACCESS_LOG=off`), and the defaults again as a control, one server of each per repeat,
in turns.

Each server answers one PNG at 1 client (fresh), no-op requests at 1 client, then a burst of
64-image requests (PNG, JSON arrays, then `.npy` files) at 32 clients, then one PNG at 1 client
again: the latency and throughput aims of
docs/BENCHMARKS.md, for each choice, with the accuracy the model's run measured for its views
(from the model card, as `/metadata` reports it).

`python -m bench.views [--repeats N] [ARM ...]` runs the named arms alone beside the defaults
and the defaults again (every arm when none is named) and prints the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd

from bench.history import three_digits
from bench.serving import Server, load, request_bodies, workdir
from pipeline.model_card import ModelCard
from serving import views

PROBE_S = 3
BURST_S = 6
BURST_CLIENTS = 32
REPEATS = 3


@dataclass(frozen=True)
class Arm:
    """One way to serve the champion: its label, the settings that differ from the defaults,
    its views and their test accuracy, and the event loop its worker must report."""

    label: str
    views: views.ServedViews
    env: dict[str, str] = field(default_factory=dict)
    event_loop: str = "uvloop"


#: The label of the defaults, which every ratio is taken over.
DEFAULTS = "defaults"
#: The defaults once more, with one setting given at its default value: what the host's drift
#: and an arm's place in the turns alone do to a ratio over the defaults.
AGAIN = "defaults again"


def arms_for(card: ModelCard, work: Path) -> list[Arm]:
    """The defaults; every `SERVING_VIEWS` choice that serves fewer views of this model; and
    the defaults with Keras' batch norm, with Keras' model call, and on asyncio's loop
    (uvloop hidden from uvicorn by a module of that name that fails to import, so it falls
    back as where it is absent)."""
    arms = [Arm(DEFAULTS, views.choose("model", card))]
    for setting in views.CHOICES[1:]:
        try:
            choice = views.choose(setting, card)
        except SystemExit:  # `flip` of a model that never averaged it
            continue
        if choice.count not in {a.views.count for a in arms}:
            arms.append(Arm(f"SERVING_VIEWS={setting}", choice, {"SERVING_VIEWS": setting}))
    hidden = work / "no-uvloop"
    (hidden / "uvloop").mkdir(parents=True, exist_ok=True)
    (hidden / "uvloop" / "__init__.py").write_text(
        'raise ImportError("hidden by bench/views.py")\n'
    )
    return [
        *arms,
        Arm("SERVING_BATCH_NORM=fused", arms[0].views, {"SERVING_BATCH_NORM": "fused"}),
        Arm("SERVING_BATCH_NORM=keras", arms[0].views, {"SERVING_BATCH_NORM": "keras"}),
        Arm("SERVING_MODEL_CALL=keras", arms[0].views, {"SERVING_MODEL_CALL": "keras"}),
        Arm("asyncio event loop", arms[0].views, {"PYTHONPATH": str(hidden)}, "asyncio"),
        Arm("SERVING_TRACING=on", arms[0].views, {"SERVING_TRACING": "on"}),
        Arm("SERVING_ACCESS_LOG=off", arms[0].views, {"SERVING_ACCESS_LOG": "off"}),
        # Last, so that it runs at the other end of each repeat's turns from the defaults.
        Arm(AGAIN, arms[0].views, {"SERVING_BATCH_NORM": "folded"}),
    ]


def _check(url: str, arm: Arm) -> dict:
    """The worker's /metadata, after checking that it serves what `arm` says."""
    info = httpx.post(f"{url}/metadata", timeout=30).json()
    assert info["served_views"] == arm.views.count, (arm.label, info["served_views"])
    assert info["event_loop"] == arm.event_loop, (arm.label, info["event_loop"])
    setting = arm.env.get("SERVING_BATCH_NORM", "folded")
    layers = (info["folded_batch_norm_layers"], info["fused_batch_norm_layers"])
    assert (layers == (0, 0)) == (setting == "keras"), (arm.label, info)
    assert (layers[0] > 0) == (setting == "folded"), (arm.label, info)
    model_call = arm.env.get("SERVING_MODEL_CALL", "traced")
    assert info["model_call"] == model_call, (arm.label, info["model_call"])
    for setting, name, default in (
        ("SERVING_TRACING", "tracing", "off"),
        ("SERVING_ACCESS_LOG", "access_log", "on"),
    ):
        assert info[name] == arm.env.get(setting, default), (arm.label, name, info[name])
    return info


def run(model_tag: str, only: frozenset[str] = frozenset(), repeats: int = REPEATS) -> dict:
    """Every arm, `repeats` times in turns; with `only`, just those arms beside the defaults
    and the defaults again."""
    import bentoml

    card = ModelCard.from_dict(bentoml.models.get(model_tag).info.metadata)
    work = workdir()
    arms = arms_for(card, work)
    if only:
        unknown = only - {a.label for a in arms}
        if unknown:
            raise SystemExit(
                f"bench.views: no arm {', '.join(sorted(unknown))}; the arms are "
                + ", ".join(a.label for a in arms)
            )
        arms = [a for a in arms if a.label in only | {DEFAULTS, AGAIN}]
    bodies = request_bodies(work)
    rows: list[dict] = []
    for repeat in range(repeats):
        for arm in arms if repeat % 2 == 0 else arms[::-1]:
            server = Server("eager", model_tag, arm.env)
            row = {"served": arm.label, "views": arm.views.count, "repeat": repeat}
            try:
                info = _check(server.url, arm)
                row["folded BN layers"] = info["folded_batch_norm_layers"]
                row["fused BN layers"] = info["fused_batch_norm_layers"]
                for phase, body, clients, seconds in (
                    ("fresh p50 ms", "classify x1", 1, PROBE_S),
                    ("no-op p50 ms", "no-op", 1, PROBE_S),
                    ("classify x64 images/s", "classify x64", BURST_CLIENTS, BURST_S),
                    ("array x64 images/s", "array x64", BURST_CLIENTS, BURST_S),
                    ("npy x64 images/s", "npy x64", BURST_CLIENTS, BURST_S),
                    ("after the bursts p50 ms", "classify x1", 1, PROBE_S),
                ):
                    r = load(server.url, bodies[body], clients, work, duration_s=seconds)
                    rate = r["requests"] / (r["duration_us"] / 1e6)
                    row[phase] = r["p50_us"] / 1000 if "p50" in phase else rate * 64
                    row["errors"] = row.get("errors", 0) + r["non_2xx"] + r["socket_errors"]
            finally:
                server.stop()
            rows.append(row)
            print(json.dumps(row), flush=True)
    accuracy = {a.label: a.views.test_accuracy for a in arms}
    return {
        "rows": rows,
        "accuracy": accuracy,
        "model_tag": model_tag,
        "arms": len(arms),
        "repeats": repeats,
    }


def summary(raw: dict) -> pd.DataFrame:
    """Per arm: medians over the repeats, and the medians of each repeat's figure over the
    same repeat's figure with the defaults."""
    df = pd.DataFrame(raw["rows"])
    figures = [c for c in df.columns if c.endswith(("ms", "images/s"))]
    per = df.set_index(["repeat", "served"])[figures]
    defaults = per.xs(DEFAULTS, level="served").reindex(per.index.droplevel("served"))
    ratios = per.div(defaults.to_numpy())
    order = list(dict.fromkeys(df["served"]))
    out = per.groupby(level="served").median().reindex(order)
    for figure, label in RATIOS.items():
        if figure in ratios:  # figures an earlier run did not measure are left out
            out[label] = ratios[figure].groupby(level="served").median()
    out.insert(0, "views", df.groupby("served")["views"].first())
    layers = [c for c in ("folded BN layers", "fused BN layers") if c in df]  # folded: new
    for i, column in enumerate(layers, start=1):
        out.insert(i, column, df.groupby("served")[column].first())
    accuracy = raw["accuracy"]
    out.insert(
        1 + len(layers),
        "test accuracy",
        [f"{accuracy[a]:.4f}" if accuracy.get(a) else "" for a in out.index],
    )
    out["errors"] = df.groupby("served")["errors"].sum()
    return out.reset_index()


#: The figures given as ratios to the defaults', and their column names.
RATIOS = {
    "fresh p50 ms": "fresh p50 / defaults",
    "after the bursts p50 ms": "p50 after / defaults",
    "array x64 images/s": "array x64 / defaults",
    "no-op p50 ms": "no-op p50 / defaults",
    "npy x64 images/s": "npy x64 / defaults",
}


def render(raw: dict) -> str:
    table = summary(raw)
    measured = (
        f" Measured {raw['date']}, float32 matrix-multiply peak {raw['peak']:.0f} GFLOP/s."
        if "date" in raw
        else ""
    )
    traced = any(r["served"] == "SERVING_MODEL_CALL=keras" for r in raw["rows"])
    call = (
        " with Keras' `predict_on_batch` in place of the traced model call"
        " (`SERVING_MODEL_CALL=keras`, serving/forward.py);"
        if traced
        else ""
    )
    traced_default = "the model's graph traced once, " if traced else ""
    checked = ", model call" if traced else ""
    title = "batch norm, model call, event loop" if traced else "batch norm, event loop"
    observed = any(r["served"] == "SERVING_TRACING=on" for r in raw["rows"])
    if observed:
        title += ", tracing, access log"
    observability = (
        " with BentoML's OpenTelemetry spans (`SERVING_TRACING=on`, off by default) and without"
        " its access log (`SERVING_ACCESS_LOG=off`), serving/observability.py;"
        if observed
        else ""
    )
    no_op = " no-op requests at 1 client," if observed else ""
    folded = any(r["served"] == "SERVING_BATCH_NORM=fused" for r in raw["rows"])
    default_bn = (
        "batch norm folded into the layer before it"
        if folded
        else "batch norm in TensorFlow's fused kernel"
    )
    other_bn = (
        "with batch norm in TensorFlow's fused kernel (`SERVING_BATCH_NORM=fused`) and in Keras'"
        " own ops (`SERVING_BATCH_NORM=keras`), serving/batch_norm.py;"
        if folded
        else "with Keras' own batch norm (`SERVING_BATCH_NORM=keras`, serving/batch_norm.py);"
    )
    layers_checked = "folded and fused layers" if folded else "fused layers"
    npy_files = ", as JSON arrays and as `.npy` files" if observed else " and then as JSON arrays"
    repeats = raw.get("repeats", REPEATS)
    again = (
        f" `{AGAIN}` is the defaults once more, with `SERVING_BATCH_NORM=folded` given"
        " explicitly, last in each repeat's turns: its ratios are what the host's drift and an"
        " arm's place in the turns alone do."
        if any(r["served"] == AGAIN for r in raw["rows"])
        else ""
    )
    return f"""## Serving choices side by side: test-time views, {title}

`bench/views.py` (`make bench-views`). The champion, `{raw["model_tag"]}`, served by one worker
with the eager batcher: as the defaults serve it (every view the model averages,
{default_bn}, {traced_default}uvicorn on uvloop); with each `SERVING_VIEWS`
choice that changes its passes per image (serving/views.py); {other_bn}{call}{observability}
and on asyncio's event loop (uvloop hidden from the worker). Each server's /metadata is checked
for its views, {layers_checked}{checked}{", tracing, access log" if observed else ""} and event
loop before it is measured. {repeats} repeats, the arms in turns, a fresh server for each. Per
server: one PNG at 1 client for {PROBE_S} s (`fresh`),{no_op} {BURST_S} s of 64-image requests
at {BURST_CLIENTS} clients as PNG uploads{npy_files}, and one PNG at 1 client again. Figures are
medians over the repeats; `/ defaults` is the median of each repeat's figure over the same
repeat's figure with the defaults. "test accuracy" is what the model's run measured with those
views (the model card; blank where the run did not measure it).{measured}{again}

{three_digits(table).to_markdown(index=False)}
"""


def main(argv: list[str]) -> None:
    """`python -m bench.views [--repeats N] [ARM ...]`: the named arms (every arm when none is
    named) beside the defaults and the defaults again, printed as the table;
    docs/BENCHMARKS.md is left as it is."""
    from bench.run import champion_tag

    repeats = REPEATS
    if argv[:1] == ["--repeats"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            raise SystemExit("bench.views: --repeats takes a whole number of at least 1")
        repeats, argv = int(argv[1]), argv[2:]
    raw = run(champion_tag(), frozenset(argv), repeats)
    print(three_digits(summary(raw)).to_markdown(index=False))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
