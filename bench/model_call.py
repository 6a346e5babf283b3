"""The served model's call alone, as the service makes it (its graph traced once,
serving/forward.py), by TensorFlow thread pools: what `SERVING_TF_THREADS=auto` picks
(serving/threads.py) against TensorFlow's defaults, each setting in its own process (the pools
are process-wide), in turns. Under `auto`, in the same process and interleaved call by call:
Keras' `predict_on_batch` of the same model, and the model with its batch norm in TensorFlow's
fused kernel and in Keras' own ops instead of folded into the layers before it, as the service
runs it (serving/batch_norm.py).

`python -m bench.model_call TAG SETTING` measures one process and prints one `BENCH` line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import pandas as pd

from bench.history import three_digits
from bench.processes import measured

SETTINGS = ("auto", "default")
BATCHES = (1, 8, 64, 256)
#: Timed calls per batch size, after 10 untimed ones.
CALLS = {1: 300, 8: 150, 64: 40, 256: 15}
ROUNDS = 3


def measure(model_tag: str, setting: str) -> dict:
    """Median milliseconds per call at each batch size, for the model and its own network."""
    import bentoml

    from pipeline.model_card import ModelCard
    from serving import batch_norm, forward, threads

    stored = bentoml.models.get(model_tag)
    card = ModelCard.from_dict(stored.info.metadata)
    pools = threads.apply(
        threads.choose(
            threads.parse(setting),
            multi_view=card.test_time_views > 1,
            gpu=False,
            cpus=threads.usable_cpus(),
        )
    )
    import keras
    import numpy as np

    from pipeline.test_time import base_model

    def load() -> keras.Model:
        return keras.saving.load_model(stored.path_of("model.keras"), safe_mode=True, compile=False)

    model, fused_bn, keras_bn = load(), load(), load()
    prepared = batch_norm.prepare(model, "folded")
    batch_norm.prepare(fused_bn, "fused")
    pixels = np.random.default_rng(0).integers(0, 256, (max(BATCHES), *card.input_shape))
    pixels = pixels.astype(np.float32)
    shape = card.input_shape
    calls = {"": forward.traced(model, shape)}
    if setting == "auto":
        calls["_keras_call"] = forward.keras_call(model)
        calls["_fused_bn"] = forward.traced(fused_bn, shape)
        calls["_keras_bn"] = forward.traced(keras_bn, shape)
    network = base_model(model)
    if setting == "default" and network is not model:
        calls["_one_view"] = forward.traced(network, shape)

    def median_ms(batch: int) -> dict[str, float]:
        """Each call's median milliseconds, the calls interleaved (rotating which goes first),
        so that the machine's slow spells weigh on all of them alike."""
        x = pixels[:batch]
        names = list(calls)
        for _ in range(10):
            for name in names:
                calls[name](x)
        times: dict[str, list[float]] = {name: [] for name in names}
        for i in range(CALLS[batch]):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                calls[name](x)
                times[name].append(time.perf_counter() - start)
        return {name: statistics.median(t) * 1000 for name, t in times.items()}

    row = {
        "setting": setting,
        "intra_op": pools.intra_op,
        "inter_op": pools.inter_op,
        "test_time_flip": card.test_time_flip,
        "folded_batch_norm_layers": prepared.folded,
        "fused_batch_norm_layers": prepared.fused,
    }
    for batch in BATCHES:
        for name, ms in median_ms(batch).items():
            row[f"b{batch}{name}_ms"] = ms
    return row


def run(model_tag: str) -> dict:
    """ROUNDS rounds, each timing every setting once in a fresh process, in reverse order
    every other round."""
    rows = []
    for round_ in range(ROUNDS):
        for setting in SETTINGS if round_ % 2 == 0 else SETTINGS[::-1]:
            figures = measured("bench.model_call", model_tag, setting, timeout_s=600)
            rows.append({"round": round_, **figures})
    return {"model_tag": model_tag, "rows": rows}


FUSED = """ Every column but `Keras BN`
computes batch norm in TensorFlow's fused inference kernel, as the service does
(`SERVING_BATCH_NORM=fused`, serving/batch_norm.py; {} layers of this model); `Keras BN` is
the same model with Keras' own batch norm, timed in the `auto` process beside it."""

FOLDED = """ Every column but `fused BN` and `Keras BN` folds batch norm into the
convolution or dense layer before it, as the service does (`SERVING_BATCH_NORM=folded`,
serving/batch_norm.py; {} layers of this model folded, {} fused); `fused BN` is the same model
with every batch norm in TensorFlow's fused inference kernel, `Keras BN` with Keras' own ops,
each timed in the `auto` process beside it."""

TRACED = """ Every column but `predict_on_batch` calls the model's graph, traced once
for any batch size, as the service does (`SERVING_MODEL_CALL=traced`, serving/forward.py);
`predict_on_batch` is Keras' call of the same model, timed in the `auto` process beside it."""

INTERLEAVED = """ Within a process, the calls of a batch size are interleaved call by
call."""


def render(raw: dict) -> str:
    rows = pd.DataFrame(raw["rows"])
    auto, default = rows[rows.setting == "auto"], rows[rows.setting == "default"]
    pools = f"intra-op {auto.intra_op.iloc[0]}, inter-op {auto.inter_op.iloc[0]}"
    # Figures from before the fused batch norm have no Keras BN column, and those from before
    # the folded one no fused BN column.
    folded = "b1_fused_bn_ms" in auto
    fused = int(auto.fused_batch_norm_layers.iloc[0]) if "b1_keras_bn_ms" in auto else 0
    if folded:
        layers = (auto.folded_batch_norm_layers.iloc[0], auto.fused_batch_norm_layers.iloc[0])
        notes = FOLDED.format(*layers)
    else:
        notes = FUSED.format(fused) if fused else ""
    # Figures from before the traced call timed `predict_on_batch` alone, one call at a time.
    traced = "b1_keras_call_ms" in auto
    if traced:
        notes += TRACED + INTERLEAVED
    flip = bool(auto.test_time_flip.iloc[0])
    table = []
    for batch in BATCHES:
        a, d = auto.set_index("round")[f"b{batch}_ms"], default.set_index("round")[f"b{batch}_ms"]
        entry = {
            "images per call": batch,
            "TensorFlow's defaults, ms": d.median(),
            "auto, ms": a.median(),
            "auto / defaults": (a / d).median(),
        }
        if traced:
            keras_call = auto.set_index("round")[f"b{batch}_keras_call_ms"]
            entry["auto, predict_on_batch, ms"] = keras_call.median()
            entry["traced / predict_on_batch"] = (a / keras_call).median()
        if folded:
            fused_bn = auto.set_index("round")[f"b{batch}_fused_bn_ms"]
            entry["auto, fused BN, ms"] = fused_bn.median()
            entry["folded / fused BN"] = (a / fused_bn).median()
        if fused or folded:
            keras_bn = auto.set_index("round")[f"b{batch}_keras_bn_ms"]
            entry["auto, Keras BN, ms"] = keras_bn.median()
            label = "folded / Keras BN" if folded else "fused BN / Keras BN"
            entry[label] = (a / keras_bn).median()
        if f"b{batch}_one_view_ms" in default:
            one = default.set_index("round")[f"b{batch}_one_view_ms"]
            entry["one view, defaults, ms"] = one.median()
            entry["flip / one view, defaults"] = (d / one).median()
        table.append(entry)
    what = (
        "the model is flip-averaged, so `auto` gives each of its two passes half the cores "
        "and runs them at once"
        if flip
        else "the model has one view, so `auto` keeps TensorFlow's defaults"
    )
    return f"""
## The model call by thread pools

`bench/model_call.py`, the champion `{raw["model_tag"]}`: {
        "the model call alone, as the service makes it" if traced else "`predict_on_batch` alone"
    }, median
milliseconds per call. `auto` is what the service runs (`SERVING_TF_THREADS`, serving/threads.py);
here it chose {pools}: {what}. Each setting runs in its own process, the two in turns, {ROUNDS}
rounds; each ratio is the median over rounds of that round's ratio.{notes}{
        " `one view` is the network inside the model on the images alone (TensorFlow's defaults)."
        if flip
        else ""
    }

{three_digits(pd.DataFrame(table)).to_markdown(index=False)}
"""


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("BENCH " + json.dumps(measure(sys.argv[1], sys.argv[2])), flush=True)
