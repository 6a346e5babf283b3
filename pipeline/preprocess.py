"""Image decoding and resizing shared by training (folder datasets) and serving.

Only numpy and Pillow here: the service imports this module and must not pull in training code.
Scaling and normalisation live inside the Keras model, so both sides feed it uint8 pixels.
"""

from __future__ import annotations

import io
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Formats accepted from users and in folder datasets. MPO is the JPEG of cameras that store
#: several frames; its first frame is the photo.
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "BMP"})
#: Pillow's modes for 16-bit (and 32-bit integer) grayscale.
WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
#: Default cap on decoded pixels per image (a 40-megapixel photo passes; bombs do not).
DEFAULT_MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """An image that cannot be used, with an HTTP-like status saying why (400, 413 or 415)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageShape:
    """Height, width and channels the model expects."""

    height: int
    width: int
    channels: int

    @classmethod
    def of(cls, input_shape: tuple[int, ...] | list[int]) -> ImageShape:
        height, width, channels = (int(v) for v in input_shape)
        return cls(height, width, channels)


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image's header, refusing empty, unsupported and oversized files; its pixels are
    not decoded yet, so a decompression bomb is refused before they are (`load_image` next)."""
    if not data:
        raise ImageDecodeError("the file is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError(
            "not an image: the bytes are not PNG, JPEG, WebP or BMP", status=415
        ) from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(f"image has more than {max_pixels} pixels", status=413) from None
    if image.format not in SUPPORTED_FORMATS:
        raise ImageDecodeError(
            f"unsupported image format {image.format}; send PNG, JPEG, WebP or BMP", status=415
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels}",
            status=413,
        )
    return image


def load_image(image: Image.Image, data: bytes) -> Image.Image:
    """Decode the pixels of an image `open_image` returned (from `data`), refusing truncated
    files, and turn it as EXIF says a viewer shows it."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {image.format} image: {exc}") from None
    if image.format == "PNG" and png_rows_missing(data):
        raise ImageDecodeError("corrupt or truncated PNG image: its pixel data ends early")
    try:
        # As a viewer shows it: a camera's sideways photo is turned upright.
        return ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise ImageDecodeError(f"corrupt EXIF data in the {image.format} image: {exc}") from None


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully: `open_image`, then `load_image`."""
    return load_image(open_image(data, max_pixels), data)


#: Channels per PNG colour type (grey, RGB, palette, grey + alpha, RGBA).
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
#: Adam7 interlacing: (first row, first column, row step, column step) of each pass.
ADAM7 = (
    (0, 0, 8, 8),
    (0, 4, 8, 8),
    (4, 0, 8, 4),
    (0, 2, 4, 4),
    (2, 0, 4, 2),
    (0, 1, 2, 2),
    (1, 0, 2, 1),
)


def png_rows_missing(data: bytes) -> bool:
    """True when a PNG's compressed pixel data holds fewer rows than its header promises.

    Pillow fills the missing rows with black, without an error, when the compressed stream
    ends cleanly but early; a PNG cut short inside the stream already fails to load.
    """
    at, idat, header = 8, [], None
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind, body = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        at += 12 + length
    if header is None or len(header) < 13 or header[10] != 0:  # not a standard PNG: leave it
        return False
    width, height = int.from_bytes(header[0:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour, interlace = header[8], header[9], header[12]
    bits = depth * PNG_CHANNELS.get(colour, 1)
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for row, column, row_step, column_step in passes:
        rows = (height - row + row_step - 1) // row_step if height > row else 0
        columns = (width - column + column_step - 1) // column_step if width > column else 0
        if rows and columns:
            expected += rows * (1 + (columns * bits + 7) // 8)
    try:
        got = len(zlib.decompressobj().decompress(b"".join(idat), expected))
    except zlib.error:
        return True
    return got < expected


def _eight_bit_gray(image: Image.Image) -> Image.Image:
    """16-bit grayscale scaled to 0-255, as a viewer shows it (Pillow's `convert("L")` clips
    at 255, which turns most of such an image white), keeping a transparent grey level."""
    values = np.asarray(image)
    gray = Image.fromarray(np.rint(values / 257.0).clip(0, 255).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return gray
    alpha = Image.fromarray(np.where(values == transparent, 0, 255).astype(np.uint8), "L")
    return Image.merge("LA", (gray, alpha))


def to_pixels(image: Image.Image, shape: ImageShape) -> np.ndarray:
    """Convert to the model's colour mode and size: uint8 array of shape (H, W, C).

    Transparent areas become black, the background of the MNIST-style datasets, whatever
    kind of transparency the file uses: an alpha channel, or a transparent colour (PNG's tRNS
    chunk) in a palette, grayscale or RGB image.
    """
    if image.mode in WIDE_GRAY_MODES:
        image = _eight_bit_gray(image)
    transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if transparent and image.mode != "RGBA":
        image = image.convert("RGBA")
    elif not transparent and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # palette, CMYK, 1-bit: resized in colour, not by index
    # Resize first: a large image is then composited and converted at the model's size. Pillow
    # resizes RGBA with premultiplied alpha, so this equals compositing first, up to rounding.
    if image.size != (shape.width, shape.height):
        image = image.resize((shape.width, shape.height), Image.Resampling.BILINEAR)
    if transparent:
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("L" if shape.channels == 1 else "RGB")
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(shape.height, shape.width, shape.channels)


def image_bytes_to_pixels(
    data: bytes, shape: ImageShape, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and convert in one step: what both a folder dataset and the service do per file."""
    return to_pixels(decode_image(data, max_pixels=max_pixels), shape)
