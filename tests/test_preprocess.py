"""The decoding shared by folder datasets and the service, on image files of every format.

The pixels are `tests.helpers.garments`, so these tests need no dataset on disk.
"""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.preprocess import ImageDecodeError, ImageShape, decode_image, image_bytes_to_pixels
from tests.helpers import garments

GRAY = ImageShape(28, 28, 1)
#: Six garment images; [k] is one as a 28 x 28 array.
IMAGES = garments(6, seed=7)[..., 0]


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
def test_formats_and_modes(fmt, mode):
    img = IMAGES[0]
    pixels = image_bytes_to_pixels(encode(img, fmt, mode), GRAY)
    assert pixels.shape == (28, 28, 1) and pixels.dtype == np.uint8
    tolerance = 0 if fmt in ("PNG", "BMP") else 40
    assert np.abs(pixels[..., 0].astype(int) - img).mean() <= tolerance / 4


def test_png_round_trip_is_exact():
    img = IMAGES[5]
    assert np.array_equal(image_bytes_to_pixels(encode(img, "PNG"), GRAY)[..., 0], img)


def test_any_size_is_resized():
    big = np.asarray(Image.fromarray(IMAGES[0]).resize((300, 200)))
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
def test_bad_files(data, status, message):
    if data is None:
        data = encode(IMAGES[0], "GIF")
    elif data == "truncated":
        data = encode(IMAGES[0], "PNG")[:120]
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


# --- decoded as a person sees them -----------------------------------------------------------


def _save(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    """A camera stores a portrait photo sideways with Orientation 6 (turn 90 degrees clockwise
    to view); the pixels must be the upright image."""
    upright = IMAGES[0]
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    pixels = image_bytes_to_pixels(_save(stored, exif=exif), GRAY)
    np.testing.assert_array_equal(pixels[..., 0], upright)
    without = image_bytes_to_pixels(_save(stored), GRAY)
    assert not np.array_equal(without[..., 0], upright)  # the test image is not symmetric


def test_sixteen_bit_grayscale_is_scaled_not_clipped():
    img = IMAGES[0]
    wide = img.astype(np.uint16) * 257  # the same picture in 16 bits: 255 -> 65535
    data = _save(Image.fromarray(wide))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    np.testing.assert_array_equal(image_bytes_to_pixels(data, GRAY)[..., 0], img)


@pytest.mark.parametrize(
    ("mode", "transparent"), [("L", 200), ("RGB", (200, 200, 200)), ("I;16", 200 * 257)]
)
def test_a_transparent_colour_becomes_black_like_an_alpha_channel(mode, transparent):
    """PNG's tRNS chunk in a grayscale, RGB or 16-bit image: the pixels of that colour are
    transparent, composited on black like RGBA and palette transparency."""
    values = np.full((28, 28), 120, dtype=np.uint8)
    values[:, :14] = 200
    if mode == "I;16":
        image = Image.fromarray(values.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(values).convert(mode)
    pixels = image_bytes_to_pixels(_save(image, transparency=transparent), GRAY)[..., 0]
    assert (pixels[:, :14] == 0).all()
    assert (pixels[:, 14:] == 120).all()


def test_camera_mpo_is_read_as_its_first_jpeg_frame():
    img = IMAGES[0]
    first, second = Image.fromarray(img), Image.fromarray(255 - img)
    data = _save(first, "MPO", save_all=True, append_images=[second], quality=95)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    pixels = image_bytes_to_pixels(data, GRAY)[..., 0]
    assert np.abs(pixels.astype(int) - img).mean() < 3


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png_from(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, body in chunks:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        out.append(len(body).to_bytes(4, "big") + kind + body + crc)
    return b"".join(out)


def test_a_png_whose_pixel_data_ends_early_is_refused():
    """Every chunk intact (lengths, CRCs, IEND), but the compressed data holds only the first
    row: the other 27 rows would silently be black."""
    data = _save(Image.fromarray(IMAGES[0]))
    chunks = _png_chunks(data)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    short = zlib.compress(raw[: 1 + 28])  # filter byte + one row of 28 grey pixels
    rebuilt = [(k, b) for k, b in chunks if k != b"IDAT"]
    rebuilt.insert(next(i for i, (k, _) in enumerate(rebuilt) if k == b"IEND"), (b"IDAT", short))
    with pytest.raises(ImageDecodeError, match="truncated") as caught:
        decode_image(_png_from(rebuilt))
    assert caught.value.status == 400
