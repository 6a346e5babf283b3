"""What the test-time views cost in serving: the champion served with every view its model
averages (`SERVING_VIEWS=model`) against fewer (`flip`, `one`), one server of each per repeat,
in turns.

Each server answers one PNG at 1 client (fresh), then a burst of 64-image requests (PNG, then
JSON arrays) at 32 clients, then one PNG at 1 client again: the latency and throughput aims of
docs/BENCHMARKS.md, for each choice an operator has, with the accuracy the model's run measured
for it (from the model card, as `/metadata` reports it).
"""

from __future__ import annotations

import json

import pandas as pd

from bench.history import three_digits
from bench.serving import Server, load, request_bodies, workdir
from pipeline.model_card import ModelCard
from serving import views

PROBE_S = 3
BURST_S = 6
BURST_CLIENTS = 32
REPEATS = 3


def settings_for(card: ModelCard) -> list[views.ServedViews]:
    """Every `SERVING_VIEWS` choice that serves a different number of views of this model."""
    served: dict[int, views.ServedViews] = {}
    for setting in views.CHOICES:
        try:
            choice = views.choose(setting, card)
        except SystemExit:  # `flip` of a model that never averaged it
            continue
        served.setdefault(choice.count, choice)
    return list(served.values())


def run(model_tag: str) -> dict:
    import bentoml

    card = ModelCard.from_dict(bentoml.models.get(model_tag).info.metadata)
    choices = settings_for(card)
    work = workdir()
    bodies = request_bodies(work)
    rows: list[dict] = []
    for repeat in range(REPEATS):
        order = choices if repeat % 2 == 0 else choices[::-1]
        for choice in order:
            server = Server("eager", model_tag, {"SERVING_VIEWS": choice.setting})
            row = {"setting": choice.setting, "views": choice.count, "repeat": repeat}
            try:
                for phase, body, clients, seconds in (
                    ("fresh p50 ms", "classify x1", 1, PROBE_S),
                    ("classify x64 images/s", "classify x64", BURST_CLIENTS, BURST_S),
                    ("array x64 images/s", "array x64", BURST_CLIENTS, BURST_S),
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
    accuracy = {c.count: c.test_accuracy for c in choices}
    return {"rows": rows, "accuracy": accuracy, "model_tag": model_tag}


def summary(raw: dict) -> pd.DataFrame:
    """Per choice: medians over the repeats, and the medians of each repeat's figure over the
    same repeat's figure with the model's own views (`SERVING_VIEWS=model`, always measured)."""
    df = pd.DataFrame(raw["rows"])
    figures = [c for c in df.columns if c.endswith(("ms", "images/s"))]
    per = df.set_index(["repeat", "views"])[figures]
    own = int(df.loc[df["setting"] == "model", "views"].iloc[0])
    ratios = per.div(per.xs(own, level="views").reindex(per.index.droplevel("views")).to_numpy())
    out = per.groupby(level="views").median()
    for figure, label in RATIOS.items():
        out[label] = ratios[figure].groupby(level="views").median()
    out.insert(0, "SERVING_VIEWS", df.groupby("views")["setting"].first())
    accuracy = {int(k): v for k, v in raw["accuracy"].items()}
    out.insert(
        1,
        "test accuracy",
        [f"{accuracy[int(v)]:.4f}" if accuracy.get(int(v)) else "" for v in out.index],
    )
    out["errors"] = df.groupby("views")["errors"].sum()
    return out.reset_index().sort_values("views", ascending=False)


#: The figures given as ratios to the model's own views, and their column names.
RATIOS = {
    "after the bursts p50 ms": "p50 after / model's views",
    "array x64 images/s": "array x64 / model's views",
}


def render(raw: dict) -> str:
    table = summary(raw)
    measured = (
        f" Measured {raw['date']}, float32 matrix-multiply peak {raw['peak']:.0f} GFLOP/s."
        if "date" in raw
        else ""
    )
    return f"""## What the test-time views cost in serving

`bench/views.py` (`make bench-views`). The champion, `{raw["model_tag"]}`, served with each
`SERVING_VIEWS` choice that changes its passes per image (serving/views.py): one worker, the
eager batcher, {REPEATS} repeats, the choices in turns, a fresh server for each. Per server:
one PNG at 1 client for {PROBE_S} s (`fresh`), {BURST_S} s of 64-image requests at
{BURST_CLIENTS} clients as PNG uploads and then as JSON arrays, and one PNG at 1 client again.
Figures are medians over the repeats; `/ model's views` is the median of each repeat's figure
over the same repeat's figure with the model's own views. "test accuracy" is what the model's
run measured with those views (the model card; blank where the run did not measure it).{measured}

{three_digits(table).to_markdown(index=False)}
"""
