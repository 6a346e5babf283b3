"""`make bench`: run the training and serving benchmarks and write docs/BENCHMARKS.md.

Every comparison is a ratio of figures measured side by side in this one run.
"""

from __future__ import annotations

import datetime
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd

from bench import faults, history, model_call, peer, serving, soak, views
from bench.machine import describe_machine, matmul_peak_gflops
from bench.processes import measured
from pipeline import paths
from pipeline.model_card import ModelCard

MODELS = ("lenet", "vgg", "nin", "alexnet", "googlenet")
#: Forward plus backward pass is about three forward passes; a multiply-accumulate is 2 FLOPs.
TRAIN_FLOPS_PER_MAC = 6


def _measure(*args: str) -> dict:
    return measured("bench.training", *args, timeout_s=1800)


def training_rows() -> list[dict]:
    return [{**_measure(name), **_measure(name, "--deterministic")} for name in MODELS]


def zoo_rows() -> list[dict]:
    return [_measure(name, "--zoo") for name in MODELS]


def render_zoo(raw: dict) -> str:
    """The zoo profile's loop against the augmentation and batch norm it replaced."""
    if "zoo_training" not in raw:
        return ""
    z = pd.DataFrame(raw["zoo_training"])
    zoo_machine = raw.get("zoo_machine", raw["machine"])
    ratios = {  # column: the median over rounds of that round's ratio (bench/training.py)
        "old augment / none": "old_augment_over_none",
        "new augment / none": "new_augment_over_none",
        "new / old augment": "new_over_old_augment",
        "fused BN / Keras BN": "fused_over_keras_bn",
    }
    for column, key in ratios.items():
        z[column] = z[key]
    same_work = z[z["model"] == "googlenet"]
    noise = "unmeasured"
    if not same_work.empty:
        noise = f"{same_work.iloc[0]['fused BN / Keras BN']:.3f}"
    rounds = int(z["zoo_rounds"].max())
    machine_note = (
        "" if zoo_machine == raw["machine"] else " (not the machine of the sections above)"
    )
    table = z.rename(
        columns={
            "zoo_macs_per_image": "MACs/image",
            "zoo_precision": "precision",
            "zoo_batch_size": "batch",
            "zoo_no_augment": "no augment",
            "zoo_tfdata_keras_layers": "old: Keras layers in tf.data",
            "zoo_in_graph": "new: batch layer in graph",
            "zoo_in_graph_keras_bn": "new, Keras BN",
        }
    )
    return f"""
## The zoo's training loop: augmentation and batch norm (images/s, measured {raw["zoo_date"]})

Machine: {zoo_machine["cores"]} cores, {zoo_machine["cpu"]}; GPU: {zoo_machine["gpu"]}; float32
matrix-multiply peak {raw.get("zoo_peak", raw["peak"]):.0f} GFLOP/s{machine_note}.

Each architecture as `configs/zoo.yaml` builds it (width, batch norm, precision, batch size,
with its `per_model` recipe) and as `pipeline train` compiles it, trained four ways:
`no augment`; `old`, the augmentation the project used before the zoo profile, one Keras
preprocessing layer per transform (flip, translation, contrast, brightness, erasing) mapped
over batches in `tf.data`; `new`, one `BatchAugment` layer in front of the model in the
training graph, drawing every random factor for the batch at once (flip, translation,
contrast, brightness, erasing; `pipeline/augment.py`), which is what `make train` runs; and
`new, Keras BN`, the same with Keras' own batch norm instead of TensorFlow's fused kernel
(`pipeline/fused_batch_norm.py`). After a warm-up epoch each, the four take turns for
{rounds} rounds of one epoch each, in reverse order every other round, so that the shared
machine's slow spells weigh on all four alike. The images/s columns are medians over the
rounds; each ratio is the median over rounds of that round's ratio. GoogLeNet is trained
without batch norm in the zoo, so its last two variants do the same work: their ratio,
{noise}, gauges this run's noise. The issue's aim is `new augment / none` >= 0.85.

{_tidy(table[[
        "model", "MACs/image", "precision", "batch",
        "no augment", "old: Keras layers in tf.data",
        "new: batch layer in graph", "new, Keras BN", "old augment / none",
        "new augment / none", "new / old augment", "fused BN / Keras BN",
    ]]).to_markdown(index=False)}
"""  # fmt: skip


def champion_tag() -> str:
    """The BentoML tag of the served champion (`SERVING_MODEL`, as the service reads it), without
    the MLflow queries and packaging of `served_models`, for sections that serve only it."""
    import bentoml

    return str(bentoml.models.get(os.environ.get("SERVING_MODEL", "cnn-classifier:latest")).tag)


def served_models() -> dict[str, str]:
    """The champion, the best full-data LeNet run, and the champion's architecture in float32.

    The issue's orientation figures for the HTTP path were taken with a LeNet, whose model
    time is small beside the HTTP cost; the champion shows what users get. When the champion
    was trained under mixed precision, the best float32 run of its architecture is served too,
    so that what the precision buys in serving is measured side by side.
    """
    import bentoml

    from pipeline import tracking
    from pipeline.config import TrackingConfig
    from pipeline.results import best_per_model, full_data_runs, precision_of
    from pipeline.selection import package_run

    champion = bentoml.models.get(champion_tag())
    card = ModelCard.from_dict(champion.info.metadata)
    architecture = card.architecture
    experiment_id = tracking.setup(TrackingConfig())
    champion_run = tracking.client().get_run(card.run_id)
    precision = champion_run.data.params.get("train.precision_resolved", "float32")
    models = {f"champion ({architecture}, {precision})": str(champion.tag)}
    runs = full_data_runs(experiment_id)
    wanted = [("lenet", "float32")] if architecture != "lenet" else []
    if precision != "float32":
        wanted.append((architecture, "float32"))
    for model, policy in wanted:
        matching = runs[(runs["tags.model"] == model) & (precision_of(runs) == policy)]
        if not matching.empty:
            run = tracking.client().get_run(best_per_model(matching).iloc[0]["run_id"])
            models[f"{model} ({policy})"] = package_run(run, f"cnn-bench-{model}-{policy}")
    return models


def _describe_served(models: dict[str, str]) -> str:
    import bentoml

    lines = []
    for label, tag in models.items():
        card = ModelCard.from_dict(bentoml.models.get(tag).info.metadata)
        lines.append(
            f"- {label}: `{tag}`, run `{card.run_id}`, test accuracy {card.test_accuracy:.4f}"
        )
    return "\n".join(lines)


def _tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Whole numbers from 100 up, three significant digits below, blanks for missing values."""

    def cell(v):
        if isinstance(v, float):
            if v != v:  # NaN
                return ""
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return v

    return df.map(cell)


def render(raw: dict) -> str:
    machine, peak, train, serve = raw["machine"], raw["peak"], raw["training"], raw["serving"]
    t = pd.DataFrame(train)
    t["pipeline / baseline"] = t["pipeline_no_augment"] / t["baseline_numpy_fit"]
    t["XLA / pipeline"] = t["pipeline_no_augment_xla"] / t["pipeline_no_augment"]
    if "pipeline_no_augment_bf16" in t:  # figures measured before it existed lack it
        t["bf16 / pipeline"] = t["pipeline_no_augment_bf16"] / t["pipeline_no_augment"]
    # Rows measured before augmentation moved into the training graph timed the old loop.
    augment = "augment / pipeline" if raw.get("augment_in_graph") else "tf.data augment / pipeline"
    t[augment] = t["pipeline_augment"] / t["pipeline_no_augment"]
    t["deterministic / augment"] = t["pipeline_augment_deterministic"] / t["pipeline_augment"]
    t["GFLOP/s"] = TRAIN_FLOPS_PER_MAC * t["macs_per_image"] * t["pipeline_no_augment"] / 1e9
    t["share of peak"] = t["GFLOP/s"] / peak
    train_table = t[
        [
            column
            for column in [
                "model",
                "macs_per_image",
                "baseline_numpy_fit",
                "pipeline_no_augment",
                "pipeline / baseline",
                "XLA / pipeline",
                "bf16 / pipeline",
                augment,
                "deterministic / augment",
                "GFLOP/s",
                "share of peak",
                "peak_rss_mib",
            ]
            if column in t
        ]
    ]

    s = pd.DataFrame(serve["rows"])
    noop = s[s.endpoint == "no-op"].set_index(["model", "path", "concurrency"])["requests_per_s"]
    s["vs no-op"] = s.apply(
        lambda r: r.requests_per_s / noop.get((r.model, r.path, r.concurrency), float("nan")),
        axis=1,
    )
    batched = s[s.path == "batched"].set_index(["model", "endpoint", "concurrency"])[
        "requests_per_s"
    ]
    s["batched / unbatched"] = s.apply(
        lambda r: (
            batched.get((r.model, r.endpoint, r.concurrency)) / r.requests_per_s
            if r.path == "unbatched"
            else float("nan")
        ),
        axis=1,
    )
    memory = pd.DataFrame(serve["memory"]).T

    fmt = lambda df: _tidy(df).to_markdown(index=False)  # noqa: E731
    batcher_text = (
        "in the eager batcher (`serving/batching.py`)"
        if serve.get("batcher") == "eager"
        else "in BentoML's adaptive (CORK) dispatcher"
    )
    after_load = "".join(
        f"\n{module.render(raw[key])}"
        for key, module in (
            ("model_call", model_call),
            ("history", history),
            ("views", views),
            ("peer", peer),
            ("soak", soak),
            ("faults", faults),
        )
        if key in raw
    )
    augment_note = (
        ""
        if raw.get("augment_in_graph")
        else "\n`tf.data augment` and `deterministic` were measured (on the date above) with the"
        " augmentation of that time,\nKeras preprocessing layers in `tf.data`; the zoo section"
        " below compares it with today's.\n"
    )
    bf16_note = (
        " `bf16 / pipeline` trains the same loop under Keras'\n`mixed_bfloat16` policy"
        " (`train.precision`), float32 variables and logits."
        if "bf16 / pipeline" in t
        else ""
    )
    return f"""# Benchmarks

Generated by `make bench` (raw figures: `benchmarks.json`); do not edit by hand. Training
measured on {raw["date"]}, serving on {raw.get("serving_date", raw["date"])}; every ratio
compares figures from the same run.

Machine: {machine["cores"]} cores, {machine["cpu"]}; GPU: {machine["gpu"]}; Python {
        machine["python"]
    }.
float32 matrix-multiply peak measured here (NumPy, {2048}x{2048}, median of 7): **{
        peak:.0f} GFLOP/s**.

## Training throughput (images/s, Fashion-MNIST 28x28x1, batch 128)

Medians of {3} timed epochs after one warm-up epoch, each model in its own process (its peak RSS
is the last column). `baseline_numpy_fit` is the same Keras model trained with `model.fit` on
in-memory NumPy arrays; `pipeline_no_augment` is the project's `tf.data` loop (cache, shuffle,
batch, prefetch) without augmentation, so the two do the same work. The ratios compare runs
made side by side; `deterministic / augment` is the loop exactly as `make train` runs it (TF
op determinism on, for same-seed reproducibility) over the same loop without determinism,
measured in a separate process.{bf16_note} GFLOP/s counts {
        TRAIN_FLOPS_PER_MAC
    } FLOPs per multiply-accumulate per image
(forward and backward) for the project loop.

{fmt(train_table)}
{augment_note}{render_zoo(raw)}
## Serving (wrk on 127.0.0.1, {serving.DURATION_S} s per run, median of {serving.REPEATS})

{_machine_line(raw.get("serving_machine", machine), machine)}{
        f" float32 matrix-multiply peak with these figures: {raw['serving_peak']:.0f} GFLOP/s."
        if "serving_peak" in raw
        else ""
    }

Served models:
{raw["served"]}

Each model is served by `bentoml serve` with one worker process, which decodes and validates
requests and holds the model: on 2 cores a second worker would only contend with the first and
with wrk for the same cores (each worker also holds its own copy of the model). `batched`
merges concurrent requests into one model call {batcher_text},
`unbatched` calls the model once per request. Each concurrency runs the five endpoints in
turn, {serving.REPEATS} times. `vs no-op` is requests/s over the no-op endpoint's, same server,
same concurrency: the HTTP ceiling. `classify` requests are multipart uploads of Fashion-MNIST
PNGs; `array x64` sends the same 64 images decoded, as JSON arrays, to `/classify_array`, and
`npy x64` sends them as one uint8 NumPy `.npy` file to `/classify_npy`.
wrk corrects its latency percentiles for coordinated omission: a request that stalls also
counts for the requests its connection would have sent meanwhile, so even a rare stall shows
in p95 and p99.

Against the issue's aims (batched path; peaks over both paths and all concurrencies):

{fmt(_serving_summary(s))}

All figures:

{
        fmt(
            s[
                [
                    "model",
                    "path",
                    "endpoint",
                    "concurrency",
                    "requests_per_s",
                    "images_per_s",
                    "p50_ms",
                    "p95_ms",
                    "p99_ms",
                    "errors",
                    "requests",
                    "vs no-op",
                    "batched / unbatched",
                ]
            ]
        )
    }

Peak RSS (MiB) of the serving processes after each server's runs:

{_tidy(memory).to_markdown()}

Share of peak is an estimate: training FLOPs are taken as 3x the forward pass, and the "peak"
is NumPy's float32 GEMM, which TensorFlow's oneDNN convolutions can exceed. The machine is
shared, so single figures move by tens of percent between runs; compare within a row.
{after_load}"""


def _machine_line(section: dict, training: dict) -> str:
    """Where a section was measured, said when it is not the training section's machine."""
    if section == training:
        return "Same machine as the training figures."
    return (
        f"Machine: {section['cores']} cores, {section['cpu']}; GPU: {section['gpu']} (not the "
        "machine of the training figures above)."
    )


def _serving_summary(s: pd.DataFrame) -> pd.DataFrame:
    """Per served model, the figures the aims name (>= 0.9x no-op at c=32 with 1-image
    requests, p50 <= 10 ms at c=1, >= 5,000 images/s with 64-image requests)."""
    rows = []
    for model, m in s.groupby("model", sort=False):
        batched = m[m.path == "batched"].set_index(["endpoint", "concurrency"])
        rows.append(
            {
                "model": model,
                "classify x1 vs no-op, c=32": batched.loc[("classify x1", 32), "vs no-op"],
                "classify x1 p50 ms, c=1": batched.loc[("classify x1", 1), "p50_ms"],
                "no-op p99 ms, c=1": batched.loc[("no-op", 1), "p99_ms"],
                "peak images/s, classify x64": m[m.endpoint == "classify x64"].images_per_s.max(),
                "peak images/s, array x64": m[m.endpoint == "array x64"].images_per_s.max(),
                "peak images/s, npy x64": m[m.endpoint == "npy x64"].images_per_s.max(),
                "errors": int(m.errors.sum()),
            }
        )
    return pd.DataFrame(rows)


RAW = paths.DOCS_DIR / "benchmarks.json"


#: Each measures some sections again and keeps the others' figures.
PARTIAL_FLAGS = frozenset(
    {
        "--serving",
        "--training",
        "--zoo",
        "--soak",
        "--faults",
        "--views",
        "--model-call",
        "--history",
    }
)
FLAGS = PARTIAL_FLAGS | {"--render"}


def main() -> None:
    """Measure and write the raw figures and the document.

    `--render` re-renders the JSON; `--serving` measures serving again (throughput, the model
    call by thread pools, latency after load, the serving choices side by side, MLflow's server
    as a peer) and keeps the training figures (about 70 minutes on 2 cores); `--training` does
    the reverse; `--zoo` measures only the zoo loop's augmentation and batch norm (about 10
    minutes); `--soak` only the
    10-minute soak; `--faults` only the decode floods and the killed worker (about 5 minutes);
    `--views` only the serving choices side by side (about 35 minutes); `--model-call` only
    the model call by thread pools (about 5 minutes); `--history` only the latency after
    load (about 16 minutes). Anything else stops with the usage.
    """
    unknown = [arg for arg in sys.argv[1:] if arg not in FLAGS]
    if unknown:
        raise SystemExit(
            f"bench.run: unknown {' '.join(unknown)}; use no flag (everything) or any of "
            f"{' '.join(sorted(FLAGS))}"
        )
    if "--render" in sys.argv:
        raw = json.loads(RAW.read_text())
    else:
        machine = describe_machine()
        peak = matmul_peak_gflops()
        print(f"machine: {machine}, matmul peak {peak:.0f} GFLOP/s", flush=True)
        today = datetime.date.today().isoformat()
        partial = PARTIAL_FLAGS & set(sys.argv)
        if partial:
            raw = json.loads(RAW.read_text())
            # Each section is measured whole and names its own machine; ratios never cross them.
        if not (PARTIAL_FLAGS - {"--training"}) & set(sys.argv):
            raw = {
                **(raw if partial else {}),
                "date": today,
                "machine": machine,
                "peak": peak,
                "training": training_rows(),
                "augment_in_graph": True,
            }
        if not partial or {"--zoo", "--training"} & set(sys.argv):
            raw |= {
                "zoo_training": zoo_rows(),
                "zoo_date": today,
                "zoo_machine": machine,
                "zoo_peak": peak,
            }
        if not partial or "--serving" in sys.argv:
            models = served_models()
            champion = next(iter(models.values()))
            raw |= {
                "serving": {**serving.run(models), "batcher": "eager"},
                "model_call": model_call.run(champion),
                "history": {"rows": history.run(champion), "date": today},
                "views": {**views.run(champion), "date": today, "peak": peak},
                "peer": peer.run(champion),
                "serving_date": today,
                "serving_machine": machine,
                "serving_peak": peak,
                "served": _describe_served(models),
            }
        if "--views" in sys.argv:
            raw |= {"views": {**views.run(champion_tag()), "date": today, "peak": peak}}
        if "--history" in sys.argv:
            raw |= {"history": {"rows": history.run(champion_tag()), "date": today}}
        if "--model-call" in sys.argv:
            raw |= {"model_call": model_call.run(champion_tag())}
        if not partial or "--soak" in sys.argv:
            raw |= {"soak": {**soak.run(champion_tag()), "machine": machine}}
        if not partial or "--faults" in sys.argv:
            raw |= {"faults": {**faults.run(champion_tag()), "machine": machine, "date": today}}
        paths.DOCS_DIR.mkdir(exist_ok=True)
        RAW.write_text(json.dumps(raw, indent=1))
    out = paths.DOCS_DIR / "BENCHMARKS.md"
    out.write_text(render(raw))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
