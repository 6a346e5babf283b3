"""The model zoo: one plain dict from name to module. Adding a model = one file + one line here.

Each module has `Options`, a frozen dataclass of its hyperparameters (the shared `model`
section's fields plus its own, each checked in `__post_init__`), and
`build(x, num_classes, options) -> logits`. The configuration builds every model's `Options`
when it loads, so a bad option stops the run before any data is read. The modules import
Keras inside their functions, so that loading a configuration imports no TensorFlow (which
takes seconds).
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType
from typing import Any

from pipeline.errors import ConfigError
from pipeline.typed import build_dataclass

#: name -> module; modules are imported on first use.
REGISTRY: dict[str, str] = {
    "lenet": "pipeline.models.lenet",
    "alexnet": "pipeline.models.alexnet",
    "vgg": "pipeline.models.vgg",
    "nin": "pipeline.models.nin",
    "googlenet": "pipeline.models.googlenet",
    "resnet": "pipeline.models.resnet",
}


def _module(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise ConfigError(f"unknown model '{name}'; choose from {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name])


def options_for(name: str, own: dict[str, Any] | None = None, shared=None):
    """The typed, checked options of architecture `name`: the shared `model` section
    (`shared`, a ModelConfig) overlaid with the model's own `model_options.<name>` values."""
    cls = _module(name).Options
    own = dict(own or {})
    prefix = f"model_options.{name}."
    base = dataclasses.asdict(shared) if shared is not None else {}
    try:
        return build_dataclass(cls, {**base, **own}, prefix)
    except ConfigError as exc:  # a shared range check names `model.KEY`: name the own key
        message = str(exc)
        for key in own:
            message = message.replace(f"config key 'model.{key}'", f"config key '{prefix}{key}'")
        raise ConfigError(message) from None


def build_model(name: str, spec, options=None, **values: Any):
    """A Keras model taking pixels in [0, 255] of `spec.input_shape` and returning logits.

    `options` is the architecture's `Options` (`Config.for_model`); without it, `values` are
    checked into one (`build_model("vgg", spec, width=0.5)`).
    """
    import keras

    from pipeline.models.layers import stem

    module = _module(name)
    if options is None:
        options = options_for(name, values)
    elif values:
        raise TypeError("pass either options or keyword values, not both")
    inputs = keras.Input(shape=spec.input_shape, name="pixels")  # B, H, W, C
    outputs = module.build(stem(inputs, spec.mean, spec.std), spec.num_classes, options)
    return keras.Model(inputs, outputs, name=name)
