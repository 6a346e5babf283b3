"""Pixel batches sent by clients that already hold decoded images: JSON lists or a NumPy file.

Both end as the same checked float32 batch (N, H, W, C). The `.npy` file is NumPy's own
format (`np.save`): a short text header and the raw values, so a 64-image batch is read in
microseconds, where the same pixels as JSON cost the worker milliseconds of parsing and
conversion (docs/BENCHMARKS.md, "array x64" against "npy x64"). The header is read and
checked before any array is made, so a header that claims more data than the body holds
costs nothing.
"""

from __future__ import annotations

import io
import itertools
import math
from http import HTTPStatus

import numpy as np
import numpy.lib.format as npy

from pipeline.preprocess import ImageShape


class ArrayError(ValueError):
    """An array the service cannot use, with the HTTP status its answer gets."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.UNPROCESSABLE_ENTITY):
        super().__init__(message)
        self.status = status


_NOT_NUMBERS = "pixels must be a rectangular nested list of numbers (no strings, booleans or nulls)"
#: The header versions `np.save` writes (3.0 only for non-ASCII field names, never numbers).
_HEADER_READERS = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}


def from_json(pixels: list) -> np.ndarray:
    """`pixels` as an array, if it is a rectangular nested list of JSON numbers. NumPy alone
    would read the string "12" as 12 and `true` as 1, and fail with OverflowError on a huge
    integer."""
    try:
        raw = np.asarray(pixels)
    except (ValueError, TypeError, OverflowError):
        raise ArrayError(_NOT_NUMBERS) from None
    if raw.dtype.kind not in "iuf":  # strings, booleans only, nulls, huge integers, ragged
        raise ArrayError(_NOT_NUMBERS)
    leaves = pixels
    for _ in range(raw.ndim - 1):
        leaves = list(itertools.chain.from_iterable(leaves))
    if bool in set(map(type, leaves)):  # booleans mixed with numbers pass NumPy as integers
        raise ArrayError(_NOT_NUMBERS)
    return raw


def from_npy(data: bytes) -> np.ndarray:
    """The array of a `.npy` file's bytes, read without copying; integers or floats only."""
    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        reader = _HEADER_READERS.get(version)
        if reader is None:
            raise ValueError(f"header version {version[0]}.{version[1]} is not supported")
        shape, fortran_order, dtype = reader(stream)
    except ValueError as exc:
        raise ArrayError(
            f"not a NumPy .npy file (write it with numpy.save): {exc}", HTTPStatus.BAD_REQUEST
        ) from None
    if dtype.kind not in "iuf" or dtype.hasobject:
        raise ArrayError(f"dtype {dtype} is not a number type: send integers or floats")
    count = math.prod(shape)
    expected = count * dtype.itemsize
    offset = stream.tell()
    if len(data) - offset != expected:
        raise ArrayError(
            f"the .npy header says {' x '.join(map(str, shape))} values of {dtype} "
            f"({expected} bytes), but {len(data) - offset} bytes follow it",
            HTTPStatus.BAD_REQUEST,
        )
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape, order="F" if fortran_order else "C")


def checked_batch(array: np.ndarray, shape: ImageShape, max_images: int) -> np.ndarray:
    """`array` as the model's float32 input (N, H, W, C), after the checks every array input
    gets: its shape (N x H x W accepted for grayscale), 1 to `max_images` images, finite
    values in [0, 255]."""
    expected = (shape.height, shape.width, shape.channels)
    if array.ndim == 3 and shape.channels == 1 and array.shape[1:] == expected[:2]:
        array = array[..., None]  # N x H x W grayscale is accepted too
    if array.ndim != 4 or array.shape[1:] != expected:
        raise ArrayError(
            f"pixels must have shape N x {' x '.join(map(str, expected))}, got "
            f"{' x '.join(map(str, array.shape))}"
        )
    if not 1 <= len(array) <= max_images:
        raise ArrayError(
            f"{len(array)} images in one request; send 1 to {max_images}",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE if len(array) else HTTPStatus.BAD_REQUEST,
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ArrayError("pixels contain NaN or infinity")
    if array.min() < 0 or array.max() > 255:
        raise ArrayError("pixel values must be in [0, 255]")
    return array.astype(np.float32)
