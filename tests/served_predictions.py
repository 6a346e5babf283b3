"""`python -m tests.served_predictions TAG IMAGES.npy OUT.npy`: the probabilities that the
service's model path (serving/model.py) gives for IMAGES under the running Keras backend, for
the BentoML model TAG; prints a JSON line of what it served with. Run in a subprocess by
tests/test_jax_backend.py, once per backend."""

from __future__ import annotations

import json
import sys

import bentoml
import numpy as np

from pipeline.model_card import ModelCard
from pipeline.scoring import softmax
from serving import model as served


def main(tag: str, images: str, out: str) -> None:
    ref = bentoml.models.get(tag)
    card = ModelCard.from_dict(ref.info.metadata)
    ready = served.load(
        ref.path_of("model.keras"), card, views="model", gpu=False, max_batch_size=64
    )
    pixels = np.load(images).astype(np.float32)
    np.save(out, softmax(ready.forward(pixels)))
    after_requests = ready.compiles_after_start()
    if isinstance(ready.forward, served.Compiled):  # the count counts: an unpadded size
        ready.forward._run(pixels[:3]).block_until_ready()
    line = {
        "backend": ready.backend,
        "trained_on": card.backend,
        "batch_sizes": list(ready.batch_sizes),
        "compiles_after_requests": after_requests,
        "compiles_after_an_unpadded_call": ready.compiles_after_start(),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }
    print("SERVED " + json.dumps(line))


if __name__ == "__main__":
    main(*sys.argv[1:])
