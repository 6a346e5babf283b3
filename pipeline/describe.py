"""Per-layer table of a model: kernel/stride/padding, output shape, parameters, MACs.

For each convolution it also gives the parameters a fully connected layer mapping the same input
to the same output would need, which is the point of convolutions in one number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import keras
import pandas as pd


def padding_total(n: int, kernel: int, stride: int, padding: str) -> int:
    """Total zero padding (both sides) Keras adds along one axis of size n."""
    if padding == "valid":
        return 0
    out = math.ceil(n / stride)
    return max((out - 1) * stride + kernel - n, 0)


def output_size(n: int, kernel: int, stride: int, padding: str) -> int:
    """floor((n + 2p - f) / s) + 1, with 2p the total padding of `padding_total`."""
    return (n + padding_total(n, kernel, stride, padding) - kernel) // stride + 1


@dataclass(frozen=True)
class LayerRow:
    layer: str
    kind: str
    kernel_stride_padding: str
    output_shape: str
    params: int
    fc_equivalent_params: int | None
    macs: int


def _prod(shape) -> int:
    return int(math.prod(int(d) for d in shape if d is not None))


def _geometry(layer: keras.layers.Layer) -> str:
    kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
    if kernel is None:
        return ""
    strides = getattr(layer, "strides", None) or kernel
    return f"{'x'.join(map(str, kernel))} /{'x'.join(map(str, strides))} {layer.padding}"


def _macs(layer: keras.layers.Layer, in_shape, out_shape) -> int:
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return _prod(out_shape[1:]) * kh * kw * int(in_shape[-1]) // layer.groups
    if isinstance(layer, keras.layers.Dense):
        return int(in_shape[-1]) * layer.units
    return 0


def describe(model: keras.Model) -> pd.DataFrame:
    """One row per layer (the input layer excluded), in graph order."""
    rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        in_shape = layer.input.shape if not isinstance(layer.input, list) else None
        out_shape = layer.output.shape
        fc_equiv = None
        if isinstance(layer, keras.layers.Conv2D):
            fc_equiv = _prod(in_shape[1:]) * _prod(out_shape[1:]) + _prod(out_shape[1:])
        rows.append(
            LayerRow(
                layer=layer.name,
                kind=type(layer).__name__,
                kernel_stride_padding=_geometry(layer),
                output_shape="x".join(str(d) for d in out_shape[1:]),
                params=layer.count_params(),
                fc_equivalent_params=fc_equiv,
                macs=_macs(layer, in_shape, out_shape) if in_shape is not None else 0,
            )
        )
    return pd.DataFrame([asdict(r) for r in rows])


def totals(table: pd.DataFrame) -> dict[str, int]:
    """Parameters and multiply-accumulates per image, as logged with every run."""
    return {"params": int(table["params"].sum()), "macs_per_image": int(table["macs"].sum())}


def render(table: pd.DataFrame) -> str:
    """The table as text, with the totals line at the end."""
    shown = table.copy()
    shown["fc_equivalent_params"] = shown["fc_equivalent_params"].map(
        lambda v: "" if pd.isna(v) else f"{int(v):,}"
    )
    for col in ("params", "macs"):
        shown[col] = shown[col].map(lambda v: f"{int(v):,}")
    total = totals(table)
    return (
        shown.to_string(index=False)
        + f"\n\ntotal parameters: {total['params']:,}"
        + f"\ntotal multiply-accumulates per image: {total['macs_per_image']:,}"
    )
