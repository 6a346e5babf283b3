"""The decoding shared by folder datasets and the service, on real images of every format."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.preprocess import ImageDecodeError, ImageShape, decode_image, image_bytes_to_pixels

GRAY = ImageShape(28, 28, 1)


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


FORMAT_MODES = [
    (fmt, mode)
    for fmt in ("PNG", "JPEG", "WEBP", "BMP")
    for mode in ("L", "RGB", "RGBA")
    if (fmt, mode) != ("JPEG", "RGBA")  # JPEG has no alpha channel
]


@pytest.mark.parametrize(("fmt", "mode"), FORMAT_MODES)
def test_formats_and_modes(fashion, fmt, mode):
    img = fashion.x_test[0, ..., 0]
    pixels = image_bytes_to_pixels(encode(img, fmt, mode), GRAY)
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.uint8
    tolerance = 0 if fmt in ("PNG", "BMP") else 40
    assert np.abs(pixels[..., 0].astype(int) - img).mean() <= tolerance / 4


def test_png_round_trip_is_exact(fashion):
    img = fashion.x_test[5, ..., 0]
    assert np.array_equal(image_bytes_to_pixels(encode(img, "PNG"), GRAY)[..., 0], img)


def test_any_size_is_resized(fashion):
    big = np.asarray(Image.fromarray(fashion.x_test[0, ..., 0]).resize((300, 200)))
    assert image_bytes_to_pixels(encode(big, "PNG"), GRAY).shape == (28, 28, 1)
    assert image_bytes_to_pixels(encode(big, "PNG"), ImageShape(32, 32, 3)).shape == (32, 32, 3)


def test_transparent_becomes_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent
    assert image_bytes_to_pixels(encode(rgba, "PNG"), GRAY).max() == 0


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"just some text", 415, "not an image"),
        (None, 415, "unsupported image format GIF"),
        ("truncated", 400, "corrupt or truncated PNG"),
    ],
)
def test_bad_files(fashion, data, status, message):
    if data is None:
        data = encode(fashion.x_test[0, ..., 0], "GIF")
    elif data == "truncated":
        data = encode(fashion.x_test[0, ..., 0], "PNG")[:120]
    with pytest.raises(ImageDecodeError, match=message) as err:
        decode_image(data)
    assert err.value.status == status


def test_pixel_bomb_is_refused_before_decoding():
    # 5000 x 5000 of zeros compresses to a few kB but would decode to 25 megapixels.
    bomb = encode(np.zeros((5000, 5000), dtype=np.uint8), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(ImageDecodeError, match="more than the limit of 1000000") as err:
        decode_image(bomb, max_pixels=1_000_000)
    assert err.value.status == 413
