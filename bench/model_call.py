"""The served model's call alone, as the service makes it (its graph traced once, batch norm
folded: serving/model.py), by TensorFlow thread pools: what the service picks (`auto`) against
TensorFlow's defaults, each in its own process (the pools are process-wide), in turns. Under
`auto`, in the same process and interleaved call by call: Keras' `predict_on_batch` of the same
model, and the model with its batch norm in TensorFlow's fused kernel everywhere and in Keras'
own ops (pipeline/batch_norm.py).

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
    import keras
    import numpy as np

    from pipeline import batch_norm
    from pipeline.model_card import ModelCard
    from pipeline.tta import base_model
    from serving import model as served

    stored = bentoml.models.get(model_tag)
    card = ModelCard.from_dict(stored.info.metadata)
    pools = served.ThreadPools()
    if setting == "auto":
        multi_view, cpus = card.test_time_views > 1, served.usable_cpus()
        pools = served.choose_thread_pools(multi_view=multi_view, gpu=False, cpus=cpus)
    pools = served.apply_thread_pools(pools)

    def load() -> keras.Model:
        return keras.saving.load_model(stored.path_of("model.keras"), safe_mode=True, compile=False)

    model, fused_bn, keras_bn = load(), load(), load()
    prepared = batch_norm.prepare_for_inference(model)
    batch_norm.fuse(fused_bn)
    pixels = np.random.default_rng(0).integers(0, 256, (max(BATCHES), *card.input_shape))
    pixels = pixels.astype(np.float32)
    shape = card.input_shape
    calls = {"": served.traced(model, shape)}
    if setting == "auto":
        calls["_keras_call"] = lambda x: np.asarray(model.predict_on_batch(x))
        calls["_fused_bn"] = served.traced(fused_bn, shape)
        calls["_keras_bn"] = served.traced(keras_bn, shape)
    network = base_model(model)
    if setting == "default" and network is not model:
        calls["_one_view"] = served.traced(network, shape)

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


NOTES = """ Every column but `fused BN` and `Keras BN` folds batch norm into the convolution
or dense layer before it, as the service does (pipeline/batch_norm.py; {} layers of this model
folded, {} fused); `fused BN` is the same model with every batch norm in TensorFlow's fused
inference kernel, `Keras BN` with Keras' own ops. Every column but `predict_on_batch` calls the
model's graph, traced once for any batch size, as the service does (serving/model.py);
`predict_on_batch` is Keras' call of the same model. Those three are timed in the `auto`
process beside it, interleaved call by call."""


def render(raw: dict) -> str:
    rows = pd.DataFrame(raw["rows"])
    auto, default = rows[rows.setting == "auto"], rows[rows.setting == "default"]
    pools = f"intra-op {auto.intra_op.iloc[0]}, inter-op {auto.inter_op.iloc[0]}"
    notes = NOTES.format(
        auto.folded_batch_norm_layers.iloc[0], auto.fused_batch_norm_layers.iloc[0]
    )
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
        for column, label, ratio in (
            ("keras_call", "predict_on_batch", "traced / predict_on_batch"),
            ("fused_bn", "fused BN", "folded / fused BN"),
            ("keras_bn", "Keras BN", "folded / Keras BN"),
        ):
            other = auto.set_index("round")[f"b{batch}_{column}_ms"]
            entry[f"auto, {label}, ms"] = other.median()
            entry[ratio] = (a / other).median()
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

`bench/model_call.py` (`make bench WHAT=model-call`), the champion `{raw["model_tag"]}`: the
model call alone, as the service makes it, median milliseconds per call. `auto` is what the
service runs (serving/model.py); here it chose {pools}: {what}. Each setting runs in its own
process, the two in turns, {ROUNDS} rounds; each ratio is the median over rounds of that
round's ratio.{notes}{
        " `one view` is the network inside the model on the images alone (TensorFlow's defaults)."
        if flip
        else ""
    }

{three_digits(pd.DataFrame(table)).to_markdown(index=False)}
"""


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("BENCH " + json.dumps(measure(sys.argv[1], sys.argv[2])), flush=True)
