"""Client pixel arrays (serving/arrays.py): `.npy` files read without copying, JSON lists, and
the checks both get. Real files written by `numpy.save`; the real-server tests send them too."""

from __future__ import annotations

import io
import zipfile
from http import HTTPStatus

import numpy as np
import numpy.lib.format as npy
import pytest

from pipeline.preprocess import ImageShape
from serving import arrays

GRAY = ImageShape.of((28, 28, 1))


def saved(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", ["uint8", "<u2", ">i4", "float16", "<f4", ">f8"])
def test_npy_files_of_every_number_type_and_byte_order_read_back_exactly(dtype):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (3, 28, 28, 1)).astype(dtype)
    got = arrays.from_npy(saved(array))
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)
    batch = arrays.checked_batch(got, GRAY, max_images=64)
    assert batch.dtype == np.float32
    np.testing.assert_array_equal(batch, array.astype(np.float32))


def test_fortran_order_and_the_version_2_header_read_back_exactly():
    array = np.asfortranarray(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28))
    fortran = saved(array)
    assert npy.read_magic(io.BytesIO(fortran)) == (1, 0)
    np.testing.assert_array_equal(arrays.from_npy(fortran), array)

    buffer = io.BytesIO()
    npy.write_array(buffer, array, version=(2, 0))
    version_2 = buffer.getvalue()
    assert npy.read_magic(io.BytesIO(version_2)) == (2, 0)
    np.testing.assert_array_equal(arrays.from_npy(version_2), array)
    # N x H x W grayscale becomes N x H x W x 1.
    assert arrays.checked_batch(arrays.from_npy(version_2), GRAY, 64).shape == (2, 28, 28, 1)


def test_the_array_is_a_view_of_the_request_bytes_not_a_copy():
    data = saved(np.ones((64, 28, 28, 1), dtype=np.uint8))
    got = arrays.from_npy(data)
    assert not got.flags.owndata and not got.flags.writeable


def _refusal(data: bytes) -> arrays.ArrayError:
    with pytest.raises(arrays.ArrayError) as caught:
        arrays.checked_batch(arrays.from_npy(data), GRAY, max_images=64)
    return caught.value


def _header_only(shape: tuple[int, ...], dtype: str) -> bytes:
    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, pixels=np.zeros((1, 28, 28, 1), dtype=np.uint8))
    assert zipfile.is_zipfile(io.BytesIO(buffer.getvalue()))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", HTTPStatus.BAD_REQUEST, "not a NumPy .npy file"),
        (b"just some text, not an array", HTTPStatus.BAD_REQUEST, "not a NumPy .npy file"),
        (_npz(), HTTPStatus.BAD_REQUEST, "not a NumPy .npy file"),
        (
            saved(np.array([{"a": 1}] * 2, dtype=object), allow_pickle=True),
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "dtype object is not a number type",
        ),
        (saved(np.zeros((1, 28, 28, 1), dtype=bool)), 422, "dtype bool is not a number type"),
        (saved(np.zeros((1, 28, 28, 1), dtype="complex64")), 422, "complex64 is not a number"),
        (saved(np.array(["12"] * 784).reshape(1, 28, 28, 1)), 422, "is not a number type"),
        # Truncated: the header promises 784 bytes, 100 follow.
        (saved(np.zeros((1, 28, 28, 1), np.uint8))[:-684], 400, "(784 bytes), but 100 bytes"),
        # A header that claims a terabyte is refused before anything is allocated.
        (_header_only((10**6, 10**6), "<f4"), 400, "but 0 bytes follow it"),
        (saved(np.zeros((2, 32, 32, 3), np.uint8)), 422, "must have shape N x 28 x 28 x 1, got 2"),
        (saved(np.zeros((0, 28, 28, 1), np.uint8)), 400, "0 images in one request"),
        (saved(np.zeros((65, 28, 28, 1), np.uint8)), 413, "65 images in one request; send 1"),
        (saved(np.full((1, 28, 28, 1), 300, np.int16)), 422, "in [0, 255]"),
        (saved(np.full((1, 28, 28, 1), -1.0, np.float32)), 422, "in [0, 255]"),
        (saved(np.full((1, 28, 28, 1), np.nan, np.float32)), 422, "NaN or infinity"),
        (saved(np.full((1, 28, 28, 1), np.inf, np.float16)), 422, "NaN or infinity"),
        (saved(np.full((1, 28, 28, 1), 1e300, np.float64)), 422, "in [0, 255]"),
    ],
)
def test_unusable_files_are_refused_with_a_status_and_a_reason(data, status, message):
    refusal = _refusal(data)
    assert refusal.status == status
    assert message in str(refusal)


def test_json_lists_of_numbers_only_become_arrays():
    assert arrays.from_json([[1, 2.5], [3, 4]]).dtype.kind == "f"
    for bad in ([[1, 2], [3]], [["a", "b"]], [[1, True]], [[None, 1]], [[10**400, 1]]):
        with pytest.raises(arrays.ArrayError, match="rectangular nested list of numbers"):
            arrays.from_json(bad)
