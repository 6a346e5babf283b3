"""BentoML service: the champion CNN over HTTP, with adaptive batching and clear 4xx errors.

One service, `Classifier`: each worker validates and decodes the request (auth, limits,
image decoding), then asks the Keras model it holds through a batcher, which merges
concurrent requests into one model call, and answers top-k labels. See
serving/batching.py for why the model is not a second service.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import BaseModel
from starlette.responses import JSONResponse

from pipeline.model_card import ModelCard
from pipeline.preprocess import ImageDecodeError, ImageShape
from pipeline.scoring import softmax, top_k
from serving import (
    arrays,
    batch_norm,
    connections,
    demo,
    forward,
    observability,
    threads,
    upstream,
    views,
)
from serving import settings as settings_module
from serving.batching import CorkBatcher, EagerBatcher, Overloaded
from serving.decoding import Decoder, NamedImage
from serving.guard import RequestGuard
from serving.heap import freeze_startup_objects
from serving.uploads import UploadedFile

SETTINGS = settings_module.load()
upstream.install()
connections.install(SETTINGS.header_timeout_s)
# TensorFlow takes GPU memory as it needs it instead of all of it at start-up.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class RequestError(BentoMLException):
    """A client error with its own HTTP status; BentoML answers `[{"error": message}]`."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message, error_code=status)


class Label(BaseModel):
    label: str
    probability: float


class ImagePrediction(BaseModel):
    #: Position of the image in the request.
    index: int
    top: list[Label]


#: The classify endpoints' response, as the OpenAPI document describes it. The endpoints
#: answer it as a ready `JSONResponse` of plain lists and dicts, which BentoML sends as it is:
#: from these models BentoML would validate the list again, dump it twice and encode it, a
#: tenth of the event loop's CPU for a one-image request (py-spy).
Predictions = Annotated[list[ImagePrediction], ContentType("application/json")]


class ModelInfo(BaseModel):
    """The served model's card (pipeline/model_card.py) and what this service adds to it."""

    model_tag: str
    architecture: str
    run_id: str
    registered_model: str
    registry_version: str
    dataset: str
    class_names: list[str]
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    normalisation: str
    test_accuracy: float
    test_macro_f1: float
    #: The Keras dtype policy the model computes in, as trained and evaluated.
    precision: str
    #: Whether each answer is the mean over the image and its mirror image (twice the cost).
    test_time_flip: bool
    #: Passes of the network per image the registered model makes: 2 with the flip, 10 with
    #: the flip and shifts. The card's test figures above are that model's.
    test_time_views: int
    test_accuracy_one_view: float | None = None
    test_accuracy_flip_only: float | None = None
    #: What this server answers with (`SERVING_VIEWS`, serving/views.py): its passes per image
    #: and their test accuracy in the model's run (null where the run did not measure it).
    served_views: int
    served_test_accuracy: float | None
    max_images_per_request: int
    #: TensorFlow's CPU thread pools as it reports them; 0 is its default (serving/threads.py).
    intra_op_threads: int
    inter_op_threads: int
    #: Batch-norm layers folded into the convolution or dense layer before them, and those
    #: computed in TensorFlow's fused inference kernel (`SERVING_BATCH_NORM`,
    #: serving/batch_norm.py).
    folded_batch_norm_layers: int
    fused_batch_norm_layers: int
    #: `traced` (the model's graph, traced once) or `keras` (`predict_on_batch`):
    #: serving/forward.py.
    model_call: str
    #: BentoML's OpenTelemetry spans and access log, `on` or `off` (serving/observability.py).
    tracing: str
    access_log: str
    #: The package of the worker's asyncio event loop: `uvloop` where it is installed, as
    #: uvicorn picks it (pyproject.toml), else `asyncio`.
    event_loop: str = ""


def _model_file(name: str) -> Path:
    """A file in the served model's folder (what the demo page shows from it)."""
    return Path(Classifier.inner.bento_model.stored.path_of(name))


@functools.cache
def _card() -> ModelCard:
    """The served model's card, read once from its BentoML metadata."""
    return ModelCard.from_dict(Classifier.inner.bento_model.stored.info.metadata)


def _class_names() -> list[str]:
    return list(_card().class_names)


def _batcher(predict):
    """The batching policy `SERVING_BATCHER` names (serving/batching.py), or None."""
    if SETTINGS.batcher == "eager":
        return EagerBatcher(
            predict,
            max_batch_size=SETTINGS.max_batch_size,
            max_queued_images=SETTINGS.max_queued_images,
        )
    if SETTINGS.batcher == "cork":
        return CorkBatcher(
            predict,
            max_batch_size=SETTINGS.max_batch_size,
            max_latency_ms=SETTINGS.max_latency_ms,
        )
    return None


@bentoml.asgi_app(demo.build_app(_model_file, _class_names), path="/ui")
@bentoml.service(
    name="cnn_classifier",
    # On a CPU, TensorFlow uses every core of the worker; a GPU bento asks for one GPU.
    **({"resources": {"gpu": 1}} if SETTINGS.gpu else {}),
    **observability.service_config(SETTINGS),
    workers=SETTINGS.workers,
    traffic={"timeout": 60},
)
class Classifier:
    """Validates and decodes inputs, runs the Keras model (batched), returns top-k labels."""

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        card = _card()
        served = views.choose(SETTINGS.views, card)
        pools = threads.apply(
            threads.choose(
                SETTINGS.tf_threads,
                multi_view=served.count > 1,
                gpu=SETTINGS.gpu,
                cpus=threads.usable_cpus(),
            )
        )
        import keras

        self.model = views.apply(
            keras.saving.load_model(
                self.bento_model.path_of("model.keras"), safe_mode=True, compile=False
            ),
            served,
        )
        normalised = batch_norm.prepare(self.model, SETTINGS.batch_norm)
        self._forward = forward.choose(SETTINGS.model_call, self.model, card.input_shape)
        stored = self.bento_model
        # Warm-up: TensorFlow builds its kernels for each batch shape on first use, so the
        # first requests are not the slow ones.
        for batch in (1, 8):
            self._probabilities(np.zeros((batch, *card.input_shape), dtype=np.float32))
        self.batcher = _batcher(self._probabilities)
        self.class_names: list[str] = list(card.class_names)
        self.shape = ImageShape.of(card.input_shape)
        self.decoder = Decoder(
            self.shape,
            max_image_bytes=SETTINGS.max_image_bytes,
            max_pixels=SETTINGS.max_pixels,
            inline_pixels=SETTINGS.inline_decode_pixels,
            processes=SETTINGS.decode_processes,
        )
        self.info = ModelInfo(
            model_tag=str(stored.tag),
            max_images_per_request=SETTINGS.max_images,
            intra_op_threads=pools.intra_op,
            inter_op_threads=pools.inter_op,
            folded_batch_norm_layers=normalised.folded,
            fused_batch_norm_layers=normalised.fused,
            model_call=SETTINGS.model_call,
            tracing=SETTINGS.tracing,
            access_log=SETTINGS.access_log,
            served_views=served.count,
            served_test_accuracy=served.test_accuracy,
            **card.to_dict(),
        )
        freeze_startup_objects()

    # --- helpers -------------------------------------------------------------------------------

    def _check_k(self, k: int) -> int:
        upper = min(SETTINGS.max_k, len(self.class_names))
        if not 1 <= k <= upper:
            raise RequestError(
                f"k must be between 1 and {upper}, got {k}", HTTPStatus.UNPROCESSABLE_ENTITY
            )
        return k

    async def _decode(self, files: list[NamedImage]) -> np.ndarray:
        """(N, H, W, C) model input; an image that cannot be used is a client error."""
        try:
            return await self.decoder(files)
        except ImageDecodeError as exc:
            raise RequestError(str(exc), HTTPStatus(exc.status)) from None

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax of the model's logits for a batch (N, H, W, C) of pixels in [0, 255]."""
        return softmax(self._forward(pixels.astype(np.float32, copy=False)))

    async def _predict(self, pixels: np.ndarray) -> np.ndarray:
        if self.batcher is not None:
            return await self.batcher(pixels)
        return await anyio.to_thread.run_sync(self._probabilities, pixels)

    async def _top_k(self, pixels: np.ndarray, k: int) -> JSONResponse:
        """`Predictions` for `pixels`, or 503 with Retry-After when the model's queue is full."""
        try:
            probs = await self._predict(pixels)
        except Overloaded as exc:
            # BentoML would answer any 5xx with a generic message and no Retry-After.
            return JSONResponse(
                [{"error": str(exc)}],
                status_code=HTTPStatus.SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        names = self.class_names
        return JSONResponse(
            [
                {
                    "index": index,
                    "top": [{"label": names[i], "probability": float(p[i])} for i in best],
                }
                for index, (p, best) in enumerate(zip(probs, top_k(probs, k), strict=True))
            ]
        )

    # --- API -----------------------------------------------------------------------------------

    @bentoml.api
    async def classify(self, images: list[UploadedFile], k: int = 3) -> Predictions:
        """One or more image files (multipart field `images`): top-k labels per image."""
        k = self._check_k(k)
        if not images:
            raise RequestError("no images: send one or more files in the field 'images'")
        if len(images) > SETTINGS.max_images:
            raise RequestError(
                f"{len(images)} images in one request; the limit is {SETTINGS.max_images}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        files = [NamedImage(upload.data, f"image {i}") for i, upload in enumerate(images)]
        pixels = await self._decode(files)
        return await self._top_k(pixels, k)

    @bentoml.api(route="/classify_image")
    async def classify_image(self, image: bytes, /) -> Predictions:
        """One image as the raw request body (`Content-Type: image/*`): its top 3 labels.

        For curl: `curl --data-binary @shoe.png -H 'Content-Type: image/png' .../classify_image`.
        """
        pixels = await self._decode([NamedImage(image, "body")])
        return await self._top_k(pixels, min(3, len(self.class_names)))

    def _checked(self, read: Callable[[Any], np.ndarray], value: Any) -> np.ndarray:
        """The model's input from a client's array (serving/arrays.py); a client error else."""
        try:
            return arrays.checked_batch(read(value), self.shape, SETTINGS.max_images)
        except arrays.ArrayError as exc:
            raise RequestError(str(exc), exc.status) from None

    @bentoml.api
    async def classify_array(self, pixels: list, k: int = 3) -> Predictions:
        """A JSON batch of decoded images (N x H x W x C, values 0-255): top-k labels each."""
        k = self._check_k(k)
        return await self._top_k(self._checked(arrays.from_json, pixels), k)

    @bentoml.api
    async def classify_npy(self, array: UploadedFile, k: int = 3) -> Predictions:
        """The same batch as a NumPy `.npy` file (multipart field `array`, written by
        `numpy.save`; integers or floats): top-k labels each. One byte per uint8 value, and
        read without parsing."""
        k = self._check_k(k)
        return await self._top_k(self._checked(arrays.from_npy, array.data), k)

    @bentoml.api
    async def metadata(self) -> ModelInfo:
        """Which model answers: name, version, run id, classes, input shape, test accuracy."""
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        return self.info.model_copy(update={"event_loop": loop})

    @bentoml.api
    def noop(self) -> dict:
        """Does nothing: the HTTP path's own ceiling, for benchmarks."""
        return {"ok": True}


class _DescribedService(type(Classifier)):
    """The service, described on its Swagger page by serving/SERVICE.md when it runs from the
    source tree too; a bento's description comes from bentofile.yaml, which names that file.
    BentoML would show its own boilerplate ("This is a Machine Learning Service created with
    BentoML", with badges fetched from the internet)."""

    __slots__ = ()

    @property
    def doc(self) -> str:
        if self.bento is not None:
            return self.bento.doc
        return (Path(__file__).parent / "SERVICE.md").read_text(encoding="utf-8")


Classifier.__class__ = _DescribedService

if SETTINGS.tracing == "off":
    Classifier.add_asgi_middleware(observability.RequestIds)
Classifier.add_asgi_middleware(
    RequestGuard,
    token=SETTINGS.api_token,
    max_request_bytes=SETTINGS.max_request_bytes,
    max_bytes_in_flight=SETTINGS.max_bytes_in_flight,
)
