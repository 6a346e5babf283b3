"""The model zoo: one plain dict from name to builder. Adding a model = one file + one line here."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from pipeline.errors import ConfigError

#: name -> "module:function"; modules are imported on first use so config checks stay cheap.
REGISTRY: dict[str, str] = {
    "lenet": "pipeline.models.lenet",
    "alexnet": "pipeline.models.alexnet",
    "vgg": "pipeline.models.vgg",
    "nin": "pipeline.models.nin",
    "googlenet": "pipeline.models.googlenet",
}


def get_builder(name: str) -> Callable[..., Any]:
    """The `build(x, num_classes, **hyperparameters)` function of architecture `name`."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose from {', '.join(REGISTRY)}")
    import importlib

    return importlib.import_module(REGISTRY[name]).build


def check_model_options(name: str, options: dict[str, Any]) -> None:
    """Reject unknown models and options before anything runs.

    The builder (and with it Keras) is imported only when there are options to check, so
    commands that merely load a config stay fast.
    """
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose from {', '.join(REGISTRY)}")
    if not options:
        return
    params = inspect.signature(get_builder(name)).parameters
    known = [p for p in params if params[p].kind is inspect.Parameter.KEYWORD_ONLY]
    for key in options:
        if key not in known:
            raise ConfigError(
                f"unknown config key 'model_options.{name}.{key}'; {name} takes {known}"
            )


def build_model(name: str, spec, **hyperparameters: Any):
    """A Keras model taking pixels in [0, 255] of `spec.input_shape` and returning logits."""
    import keras

    from pipeline.models.layers import stem

    builder = get_builder(name)
    inputs = keras.Input(shape=spec.input_shape, name="pixels")  # B, H, W, C
    outputs = builder(stem(inputs, spec.mean, spec.std), spec.num_classes, **hyperparameters)
    return keras.Model(inputs, outputs, name=name)
