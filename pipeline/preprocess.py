"""Image decoding and resizing shared by training (folder datasets) and serving.

Only numpy and Pillow here: the service imports this module and must not pull in training code.
Scaling and normalisation live inside the Keras model, so both sides feed it uint8 pixels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

#: Formats accepted from users and in folder datasets.
SUPPORTED_FORMATS = frozenset({"PNG", "JPEG", "WEBP", "BMP"})
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


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully, refusing empty, unsupported, oversized and truncated files.

    The header is read first, so a decompression bomb is refused before its pixels are decoded.
    """
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
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt or truncated {image.format} image: {exc}") from None
    return image


def to_pixels(image: Image.Image, shape: ImageShape) -> np.ndarray:
    """Convert to the model's colour mode and size: uint8 array of shape (H, W, C).

    Transparent areas become black, the background of the MNIST-style datasets.
    """
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    image = image.convert("L" if shape.channels == 1 else "RGB")
    if image.size != (shape.width, shape.height):
        image = image.resize((shape.width, shape.height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels.reshape(shape.height, shape.width, shape.channels)


def image_bytes_to_pixels(
    data: bytes, shape: ImageShape, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode and convert in one step: what both a folder dataset and the service do per file."""
    return to_pixels(decode_image(data, max_pixels=max_pixels), shape)
