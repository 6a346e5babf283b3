"""Serving choices side by side: the champion served with the defaults (every view its model
averages, uvloop, tracing off) against each `SERVING_VIEWS` choice that serves fewer views,
asyncio's event loop, BentoML's tracing on (`SERVING_TRACING=on`), and the defaults again as a
control, one server of each per repeat, in turns.

Each server answers one PNG at 1 client (fresh), no-op requests at 1 client (on the `noop`
variant, bench/variants.py, which every arm is served as), then a burst of 64-image requests
(PNG, JSON arrays, then `.npy` files) at 32 clients, then one PNG at 1 client again, with the
accuracy the model's run measured for its views (the model card, as `/metadata` reports it).

`python -m bench.views [--repeats N] [ARM ...]` runs the named arms alone beside the defaults
and the defaults again (every arm when none is named) and prints the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pandas as pd

from bench.history import three_digits
from bench.serving import Server, load, request_bodies, workdir
from pipeline.model_card import ModelCard
from serving.settings import VIEWS

if TYPE_CHECKING:
    from serving.model import ServedViews

PROBE_S = 3
BURST_S = 6
BURST_CLIENTS = 32
REPEATS = 3


@dataclass(frozen=True)
class Arm:
    """One way to serve the champion: its label, the settings that differ from the defaults,
    its views and their test accuracy, and the event loop its worker must report."""

    label: str
    views: ServedViews  # serving/model.py
    env: dict[str, str] = field(default_factory=dict)
    event_loop: str = "uvloop"


#: The label of the defaults, which every ratio is taken over.
DEFAULTS = "defaults"
#: The defaults once more, with one setting given at its default value: what the host's drift
#: and an arm's place in the turns alone do to a ratio over the defaults.
AGAIN = "defaults again"


def arms_for(card: ModelCard, work: Path) -> list[Arm]:
    """The defaults; every `SERVING_VIEWS` choice that serves fewer views of this model; and
    the defaults on asyncio's loop (uvloop hidden from uvicorn by a module of that name that
    fails to import, so it falls back as where it is absent) and with tracing on."""
    from serving.model import choose_views  # TensorFlow: not for `make bench WHAT=list`

    arms = [Arm(DEFAULTS, choose_views("model", card))]
    for setting in VIEWS[1:]:
        try:
            choice = choose_views(setting, card)
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
        Arm("asyncio event loop", arms[0].views, {"PYTHONPATH": str(hidden)}, "asyncio"),
        Arm("SERVING_TRACING=on", arms[0].views, {"SERVING_TRACING": "on"}),
        # Last, so that it runs at the other end of each repeat's turns from the defaults.
        Arm(AGAIN, arms[0].views, {"SERVING_VIEWS": "model"}),
    ]


def _check(url: str, arm: Arm) -> dict:
    """The worker's /metadata, after checking that it serves what `arm` says."""
    info = httpx.post(f"{url}/metadata", timeout=30).json()
    assert info["served_views"] == arm.views.count, (arm.label, info["served_views"])
    assert info["event_loop"] == arm.event_loop, (arm.label, info["event_loop"])
    tracing = arm.env.get("SERVING_TRACING", "off")
    assert info["tracing"] == tracing, (arm.label, info["tracing"])
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
            server = Server(model_tag, arm.env, variant="noop")
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
    repeats = raw.get("repeats", REPEATS)
    return f"""## Serving choices side by side

`bench/views.py` (`make bench WHAT=views`, measured {raw.get("date", "")}). The champion,
`{raw["model_tag"]}`, served by one worker with the eager batcher: as the defaults serve it
(every view the model averages, batch norm folded, the traced model call, uvloop, tracing
off) and with each arm's one change, checked against the worker's `/metadata` before it is
measured. `{AGAIN}` is the defaults once more, last in each repeat's turns: its ratios are
what the host's drift and an arm's place in the turns alone do. {repeats} repeats, the arms
in turns, a fresh server for each. Per server: one PNG at 1 client for {PROBE_S} s (`fresh`),
no-op requests at 1 client, {BURST_S} s of 64-image requests at {BURST_CLIENTS} clients as PNG
uploads, JSON arrays and `.npy` files, and one PNG at 1 client again. Figures are medians over
the repeats; `/ defaults` is the median of each repeat's figure over the same repeat's figure
with the defaults. "test accuracy" is what the model's run measured with those views (blank
where the run did not measure it).

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
