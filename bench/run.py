"""`make bench [WHAT=...]`: run benchmark parts and write docs/BENCHMARKS.md.

`python -m bench.run list` says what each part measures and how long it takes; `all` runs
every part, `render` writes the document again from the raw figures, and one or more part
names (`serving`, `views,faults`) measure those again and keep the others' figures. The raw
figures are docs/benchmarks.json, which `render` and every partial run read back. Every
comparison is a ratio of figures measured side by side in one run.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pandas as pd

from bench import backends, faults, history, model_call, monitoring, peer, serving, soak, views
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
(`pipeline/batch_norm.py`). After a warm-up epoch each, the four take turns for
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


def _input_verdict(train: pd.DataFrame, gap: float) -> str:
    """What the `input / arrays` columns say, in words, from their figures, against the
    median JAX / TF ratio `gap`."""
    columns = [c for c in train if c.endswith("input / arrays")]
    if not columns:
        return ""
    low, high = train[columns].min().min(), train[columns].max().max()
    span = f"The `input / arrays` ratios span {low:.2f}-{high:.2f} on both backends"
    if gap < low <= 1 <= high:
        return (
            f"{span}, around 1 and far from the {gap:.2f} between the backends: the input path "
            "is not where they differ. The difference is in the training step itself, which "
            "each backend compiles to its own kernels (XLA's CPU backend under JAX, oneDNN "
            "under TensorFlow)."
        )
    return f"{span}."


def render_backends(raw: dict) -> str:
    """TensorFlow against JAX on this machine (bench/backends.py)."""
    if "backends" not in raw:
        return ""
    b = raw["backends"]
    ratio = backends.ratios(b)
    t = pd.DataFrame(b["training"]).pivot(index="model", columns="backend")
    train = pd.DataFrame(
        {
            "precision": t[("precision", "tensorflow")],
            "TF images/s": t[("images_per_s", "tensorflow")],
            "JAX images/s": t[("images_per_s", "jax")],
            "JAX / TF": t[("images_per_s", "jax")] / t[("images_per_s", "tensorflow")],
            **{
                f"{label}: input / arrays": t[("images_per_s", b)] / t[("arrays_images_per_s", b)]
                for label, b in (("TF", "tensorflow"), ("JAX", "jax"))
                if ("arrays_images_per_s", b) in t
            },
            "TF first epoch (s)": t[("first_epoch_s", "tensorflow")],
            "JAX first epoch (s)": t[("first_epoch_s", "jax")],
            "TF later epochs (s)": t[("later_epoch_s", "tensorflow")],
            "JAX later epochs (s)": t[("later_epoch_s", "jax")],
            "TF peak RSS (MiB)": t[("peak_rss_mib", "tensorflow")],
            "JAX peak RSS (MiB)": t[("peak_rss_mib", "jax")],
        }
    ).reindex(list(backends.MODELS))
    serve = pd.DataFrame(b["serving"])[
        ["model", "concurrency", "requests_per_s", "p50_ms", "p99_ms", "errors", "worker_rss_mib"]
    ].rename(columns={"model": "backend"})
    m = b["machine"]
    return f"""
## TensorFlow against JAX on this CPU (measured {b["date"]})

Machine: {m["cores"]} cores, {m["cpu"]}; GPU: {m["gpu"]}. Keras {m.get("keras", "")} on
TensorFlow and on JAX (`KERAS_BACKEND`, pipeline/backend.py), side by side in one run
(bench/backends.py).

Training: each model with `configs/zoo.yaml`'s recipe (its width, batch norm, precision,
batch size and in-graph augmentation) in the loop `make train` runs (`training.prepare` and
`training.fit`: tf.data under TensorFlow, Keras' PyDataset under JAX), one fresh process per
backend and model, the two backends in turns and in alternating order; images/s is the median
of {3} epochs after a first one, whose seconds hold the tracing or XLA compile. `input /
arrays` is that loop over the same compiled model fed plain NumPy arrays through Keras' own
adapter in the same process. Median JAX / TF over the models: **{ratio["train median"]:.2f}**.
{_input_verdict(train, ratio["train median"])}

{_tidy(train.reset_index()).to_markdown(index=False)}

Serving: the champion (the same bento model) served by the shipped service under each
backend, one PNG per request (`/classify`), wrk for {serving.DURATION_S} s a run, the two
servers in turns, medians of {backends.REPEATS}. JAX / TF requests/s: {
        ", ".join(f"{ratio[f'serve {c} clients']:.2f} at {c} client{'s' * (c > 1)}"
                  for c in backends.CONCURRENCY)
    }.

{_tidy(serve).to_markdown(index=False)}

So each profile keeps the faster backend where it runs: TensorFlow for every CPU profile
(`quick`, `default`, `zoo`, `full`), which this table puts ahead here in training and in
serving, and JAX for `gpu` (`make train PROFILE=gpu` sets `BACKEND=jax`), the one backend
the lent GPU machine has. LeNet in float32 trails as far as the bf16 models, so the gap is not
bf16 alone.
"""  # fmt: skip


def imported_gpu_check(today: str, machine: dict, peak: float) -> dict:
    """The GPU proof's serving figures, from the folder its files were copied to
    (`GPU_RUNS`, default gpu-runs/): nothing is measured here."""
    folder = paths.PROJECT_ROOT / os.environ.get("GPU_RUNS", "gpu-runs")
    files = [folder / name for name in ("serving.json", "summary.json")]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(
            f"bench: {', '.join(missing)} not found: copy the device proof's files "
            "(bench/gpu/check.sh) there, or set GPU_RUNS to their folder"
        )
    serving_json, summary = (json.loads(f.read_text()) for f in files)
    return {"gpu_check": {"serving": serving_json, "summary": summary, "imported": today}}


def render_gpu(raw: dict) -> str:
    """The GPU proof's serving figures (bench/gpu/check.py), or why there are none."""
    if "gpu_check" not in raw:
        return """
## On one GPU: the device proof

Not run yet: no GPU has been lent to this project's sessions so far. `bench/gpu/check.sh`
trains `configs/gpu.yaml` under JAX, serves the champion on the GPU and measures images/s at
1, 64 and 1,024 images per request; `make bench WHAT=gpu GPU_RUNS=<its files>` puts the
figures here.
"""
    g = raw["gpu_check"]
    s, summary = g["serving"], g["summary"]
    rows = pd.DataFrame(s["rows"])
    return f"""
## On one GPU: the device proof (imported {g["imported"]})

Machine: {summary["machine"]["nvidia_smi"]}; JAX {summary["machine"]["jax"]}, Python {
        summary["machine"]["python"]
    }. The sweep of `configs/gpu.yaml` took {summary.get("sweep_seconds", "?")} s; the champion
`{s["model"]}` ({s["metadata"]["architecture"]}, {s["metadata"]["precision"]}) was served by
`bentoml serve` on the GPU under JAX, ready {s["startup_seconds"]} s after its start with
batch sizes {s["metadata"]["compiled_batch_sizes"]} compiled, {
        s["compiles_after_start"]
    } compiles after start; `/classify_npy` from {rows["clients"].iloc[0]} concurrent clients
(bench/gpu/check.py).

{_tidy(rows).to_markdown(index=False)}
"""


def champion_tag() -> str:
    """The BentoML tag of the served champion (`SERVING_MODEL`, as the service reads it)."""
    import bentoml

    return str(bentoml.models.get(os.environ.get("SERVING_MODEL", "cnn-classifier:latest")).tag)


def _describe_served(tag: str) -> str:
    import bentoml

    card = ModelCard.from_dict(bentoml.models.get(tag).info.metadata)
    return (
        f"- champion ({card.architecture}, {card.precision}): `{tag}`, run `{card.run_id}`, "
        f"test accuracy {card.test_accuracy:.4f}"
    )


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
    after_load = "".join(
        f"\n{module.render(raw[key])}"
        for key, module in (
            ("model_call", model_call),
            ("history", history),
            ("views", views),
            ("monitoring", monitoring),
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

Generated by `make bench` (`make bench WHAT=list` names the parts; raw figures:
`benchmarks.json`); do not edit by hand. Training
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
{augment_note}{render_zoo(raw)}{render_backends(raw)}{render_gpu(raw)}
## Serving (wrk on 127.0.0.1, {serving.DURATION_S} s per run, median of {serving.REPEATS})

{_machine_line(raw.get("serving_machine", machine), machine)}{
        f" float32 matrix-multiply peak with these figures: {raw['serving_peak']:.0f} GFLOP/s."
        if "serving_peak" in raw
        else ""
    }

Served models:
{raw["served"]}

The champion is served by `bentoml serve` with one worker process, which decodes and validates
requests and holds the model: on 2 cores a second worker would only contend with the first and
with wrk for the same cores. `batched` is the shipped service, which merges concurrent requests
into one model call in the eager batcher (`serving/batching.py`); `unbatched` is the
`unbatched` variant (bench/variants.py), one model call per request. Each concurrency runs
the endpoints and both paths in turn, {serving.REPEATS} times, each server idle while another
is measured. `vs no-op` is requests/s over those of the no-op endpoint at the same
concurrency, served by the `noop` variant: the shipped service with one endpoint more, the
HTTP path's own ceiling. `classify` requests are multipart uploads of Fashion-MNIST PNGs;
`array x64` sends the same 64 images decoded, as JSON arrays, to `/classify_array`, and
`npy x64` sends them as one uint8 NumPy `.npy` file to `/classify_npy`. wrk corrects its
latency percentiles for coordinated omission: a request that stalls also counts for the
requests its connection would have sent meanwhile, so even a rare stall shows in p95 and p99.

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


@dataclass(frozen=True)
class Part:
    """One part of `make bench`: what it measures, about how long it takes on 2 cores, and
    the function that measures it (given the date and the machine) into raw figures."""

    what: str
    minutes: int
    measure: Callable[[str, dict, float], dict]


def _training(today: str, machine: dict, peak: float) -> dict:
    return {
        "date": today,
        "machine": machine,
        "peak": peak,
        "training": training_rows(),
        "augment_in_graph": True,
    }


def _zoo(today: str, machine: dict, peak: float) -> dict:
    return {"zoo_training": zoo_rows(), "zoo_date": today, "zoo_machine": machine, "zoo_peak": peak}


def _history(today: str, machine: dict, peak: float) -> dict:
    return {"history": {"rows": history.run(champion_tag()), "date": today}}


def _serving(today: str, machine: dict, peak: float) -> dict:
    """The serving goals: throughput against the no-op, latency after bursts, MLflow's server,
    and the soak, all on the champion."""
    tag = champion_tag()
    return {
        "serving": {**serving.run(tag, "champion"), "batcher": "eager"},
        **_history(today, machine, peak),
        "peer": peer.run(tag),
        "soak": {**soak.run(tag), "machine": machine},
        "serving_date": today,
        "serving_machine": machine,
        "serving_peak": peak,
        "served": _describe_served(tag),
    }


def _backends(today: str, machine: dict, peak: float) -> dict:
    from importlib.metadata import version

    figures = backends.run(champion_tag())
    machine = {**machine, "keras": version("keras")}
    return {"backends": {**figures, "date": today, "machine": machine}}


PARTS: dict[str, Part] = {
    "training": Part(
        "training images/s of each zoo model: Keras on arrays, the tf.data loop, XLA, bf16, "
        "augmentation and determinism",
        60,
        _training,
    ),
    "zoo": Part(
        "the zoo's loop: in-graph augmentation and fused batch norm against what they replaced",
        10,
        _zoo,
    ),
    "backends": Part(
        "TensorFlow against JAX: training images/s of each zoo model, and serving requests/s "
        "at 1 and 32 clients",
        20,
        _backends,
    ),
    "gpu": Part(
        "imports the GPU proof's serving figures (bench/gpu/check.sh, run on the lent GPU) "
        "from GPU_RUNS (default gpu-runs/); measures nothing here",
        0,
        imported_gpu_check,
    ),
    "serving": Part(
        "the serving goals on the champion: requests/s against the no-op variant and the "
        "unbatched one, latency after bursts (eager against CORK, each beside an untouched "
        "server), MLflow's scoring server on the same model, and a 10-minute soak",
        45,
        _serving,
    ),
    "history": Part(
        "latency after bursts alone (also part of serving): eager against CORK, each beside "
        "an untouched server",
        14,
        _history,
    ),
    "model-call": Part(
        "the model call alone: thread pools, the traced graph against predict_on_batch, "
        "folded batch norm against fused and Keras' own",
        5,
        lambda today, machine, peak: {"model_call": model_call.run(champion_tag())},
    ),
    "views": Part(
        "serving choices side by side: each SERVING_VIEWS, asyncio's event loop, tracing on, "
        "and the defaults again as a control",
        15,
        lambda today, machine, peak: {
            "views": {**views.run(champion_tag()), "date": today, "peak": peak}
        },
    ),
    "monitoring": Part(
        "what monitoring costs: requests/s at 32 clients and p50 at 1 with bentoml.monitor "
        "logging every image, against monitoring off, and on again as a control",
        9,
        lambda today, machine, peak: {
            "monitoring": {**monitoring.run(champion_tag()), "date": today, "machine": machine}
        },
    ),
    "faults": Part(
        "health checks during floods of large images (decoding in a process against on the "
        "event loop), and a worker killed mid-burst",
        6,
        lambda today, machine, peak: {
            "faults": {**faults.run(champion_tag()), "machine": machine, "date": today}
        },
    ),
}


def listing() -> str:
    """What `make bench WHAT=list` prints."""
    lines = ["make bench WHAT=PART[,PART...] measures those parts again and keeps the rest:", ""]
    lines += [f"  {name:<11} ~{part.minutes:>3} min  {part.what}" for name, part in PARTS.items()]
    total = sum(part.minutes for part in PARTS.values())
    lines += [
        "",
        f"  {'all':<11} ~{total:>3} min  every part",
        f"  {'render':<11}    0 min  docs/BENCHMARKS.md again from docs/benchmarks.json",
        f"  {'list':<11}    0 min  this list",
    ]
    return "\n".join(lines)


def chosen(args: list[str]) -> list[str]:
    """The part names in `args` (words or comma lists), in PARTS' order; SystemExit in one
    line for an unknown one."""
    names = [name for arg in args for name in arg.split(",") if name]
    if names in ([], ["all"]):
        return list(PARTS)
    unknown = [name for name in names if name not in PARTS]
    if unknown:
        raise SystemExit(
            f"bench: unknown part {', '.join(unknown)}; choose from "
            f"{', '.join(PARTS)}, all, render or list (make bench WHAT=list)"
        )
    return [name for name in PARTS if name in names]


def main(args: list[str]) -> None:
    if args in (["list"], ["help"]):
        print(listing())
        return
    raw = json.loads(RAW.read_text()) if RAW.exists() else {}
    if args != ["render"]:
        parts = chosen(args)
        machine, peak = describe_machine(), matmul_peak_gflops()
        print(f"machine: {machine}, matmul peak {peak:.0f} GFLOP/s", flush=True)
        today = datetime.date.today().isoformat()
        for name in parts:
            print(f"bench: {name} (about {PARTS[name].minutes} minutes)", flush=True)
            raw |= PARTS[name].measure(today, machine, peak)
            # Written after each part, so that an interrupted run keeps what it measured.
            paths.DOCS_DIR.mkdir(exist_ok=True)
            RAW.write_text(json.dumps(raw, indent=1))
    out = paths.DOCS_DIR / "BENCHMARKS.md"
    out.write_text(render(raw))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
