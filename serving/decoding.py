"""Image decoding for the service: small images on the event loop, large ones in a process.

Why a process and not a thread: Pillow's decoders release the GIL only in stretches, so a
thread decoding a 4-megapixel PNG still takes the GIL back every few milliseconds, and the
event loop waits its turn at every step of every other request; health checks then stall
behind a flood of large images (docs/BENCHMARKS.md, stalls and faults, measures the worst
`/livez` with decoding in a process and on the loop). Only the image bytes go to the process
and only model-sized pixels come back.

The rules themselves (limits, EXIF, 16-bit, transparency, truncation) stay in
`pipeline.preprocess`; this module only decides where they run. The header is read on the
loop first (no pixels decoded), so the pixel limit answers at once and the pixel count
picks the path.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pipeline.preprocess import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    ImageShape,
    image_bytes_to_pixels,
    load_image,
    open_image,
    to_pixels,
)

#: Requests with at most this many pixels in all their images decode on the event loop: a few
#: milliseconds at most, less than a process hop for a 28x28 PNG.
INLINE_PIXELS = 512 * 512


@dataclass(frozen=True)
class DecodeFailure:
    """What the decoding process answers for an image that cannot be used (an exception would
    lose its status on the way back)."""

    name: str
    message: str
    status: int


@dataclass(frozen=True)
class Source:
    """What a request's image was before it became model input (serving/monitoring.py logs
    it): its size and Pillow's mode (`L`, `RGB`, `RGBA`, `P`, `I;16`, ...), or `array` for
    the array endpoints, whose input is already pixels."""

    width: int
    height: int
    mode: str


@dataclass(frozen=True)
class NamedImage:
    """One file of a request: its bytes and the name errors give it (`image 3`, `body`)."""

    data: bytes
    name: str


def decode_files(
    files: list[NamedImage], shape: ImageShape, max_pixels: int
) -> np.ndarray | DecodeFailure:
    """(N, H, W, C) uint8 pixels of `files`, or the first file's failure: what the decoding
    process runs (it reads each header again, little beside the decoding itself)."""
    out = []
    for file in files:
        try:
            out.append(image_bytes_to_pixels(file.data, shape, max_pixels=max_pixels))
        except ImageDecodeError as exc:
            return DecodeFailure(file.name, str(exc), exc.status)
    return np.stack(out)


def _ready() -> bool:
    return True


def _exit_with_parent(parent_pid: int) -> None:
    """Runs in each decoding process: exit once the worker that started it is gone. A worker
    killed with SIGKILL cannot shut its pool down, and its decoding process, blocked on the
    pool's queue, would otherwise live on (tests/test_service.py kills a worker to check)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


class Decoder:
    """Decodes a request's images to model input; `await decoder(files)`.

    - Requests with at most `inline_pixels` pixels in all their images decode on the event
      loop, where a 28x28 PNG takes less time than a process hop.
    - Larger ones go to a pool of `processes` decoding processes (started with `spawn`: the
      worker holds TensorFlow's threads, which `fork` would copy half-alive). The pool's size
      bounds how many large decodes run at once; the others wait in its queue.
    - If a decoding process dies (killed, or a decoder crash), the pool is started again and the
      request retried once; an image that kills it twice is refused with 400.
    """

    def __init__(
        self,
        shape: ImageShape,
        *,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        inline_pixels: int = INLINE_PIXELS,
        # One process: on 2 cores, the other core is left to the event loop and the model.
        processes: int = 1,
    ) -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.shape = shape
        self.max_pixels = max_pixels
        self.inline_pixels = inline_pixels
        self.processes = processes
        self._pool = self._start_pool()
        self._restarting = asyncio.Lock()

    def _start_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        pool = concurrent.futures.ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        # Start the processes now, so the first large image does not wait for them.
        concurrent.futures.wait([pool.submit(_ready) for _ in range(self.processes)])
        return pool

    def open(self, file: NamedImage) -> Image.Image:
        """The file's header, checked against the pixel limit; raises ImageDecodeError. (Its
        bytes were within the request's size limit: serving/http/guard.py.)"""
        return open_image(file.data, max_pixels=self.max_pixels)

    async def __call__(self, files: list[NamedImage]) -> tuple[np.ndarray, list[Source]]:
        """Model input (N, H, W, C) for `files`, and what each file was (for monitoring);
        raises ImageDecodeError naming the bad file."""
        opened = []
        for file in files:
            try:
                opened.append(self.open(file))
            except ImageDecodeError as exc:
                raise _named(exc, file.name) from None
        sources = [Source(image.width, image.height, image.mode) for image in opened]
        if sum(image.width * image.height for image in opened) <= self.inline_pixels:
            return self._decode_here(opened, files), sources
        result = await self._in_process(files)
        if isinstance(result, DecodeFailure):
            raise ImageDecodeError(f"{result.name}: {result.message}", result.status)
        return result, sources

    def _decode_here(self, opened: list[Image.Image], files: list[NamedImage]) -> np.ndarray:
        out = []
        for image, file in zip(opened, files, strict=True):
            try:
                out.append(to_pixels(load_image(image, file.data), self.shape))
            except ImageDecodeError as exc:
                raise _named(exc, file.name) from None
        return np.stack(out)

    async def _in_process(self, files: list[NamedImage]) -> np.ndarray | DecodeFailure:
        for attempt in range(2):
            pool = self._pool
            try:
                return await asyncio.wrap_future(
                    pool.submit(decode_files, files, self.shape, self.max_pixels)
                )
            except concurrent.futures.process.BrokenProcessPool:
                await self._replace(pool)
                if attempt:
                    break
        return DecodeFailure(
            files[0].name if len(files) == 1 else "the images",
            "could not be decoded: the decoding process died on it twice",
            400,
        )

    async def _replace(self, broken: concurrent.futures.ProcessPoolExecutor) -> None:
        """A new pool for a broken one, started once however many callers saw it break."""
        async with self._restarting:
            if self._pool is broken:
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = await asyncio.to_thread(self._start_pool)


def _named(exc: ImageDecodeError, name: str) -> ImageDecodeError:
    return ImageDecodeError(f"{name}: {exc}", exc.status)
