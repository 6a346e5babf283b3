"""BentoML service: the champion CNN over HTTP, with adaptive batching and clear 4xx errors.

One service, `Classifier`: each worker validates and decodes the request, then asks the Keras
model it holds through the eager batcher (serving/batching.py), which merges concurrent
requests into one model call, and answers top-k labels. In front of the endpoints, the HTTP
layer (serving/http/) checks the token and the sizes, cuts slow clients and stops the work of
clients that hung up.

`ClassifierService` is the plain class; `configure()` adds the HTTP layer's middleware and the
demo page to the BentoML service made of it, so that a benchmark's variant of the class
(bench/variants.py) is served exactly as this one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
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

from pipeline.model_card import REFERENCE_FILE, ModelCard
from pipeline.preprocess import ImageDecodeError, ImageShape
from pipeline.scoring import softmax, top_k
from serving import arrays, demo
from serving import http as http_layer
from serving import settings as settings_module
from serving.batching import EagerBatcher, Overloaded
from serving.decoding import Decoder, NamedImage, Source
from serving.heap import freeze_startup_objects
from serving.http.guard import RequestGuard
from serving.http.tracing import RequestIds, service_config
from serving.http.uploads import UploadedFile
from serving.monitoring import Monitor
from serving.monitoring import service_options as monitoring_options

settings_module.check_keras_backend()
SETTINGS = settings_module.load()
http_layer.install(SETTINGS.header_timeout_s)
# TensorFlow and JAX take GPU memory as they need it instead of most of it at start-up.
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: The options every service made of `ClassifierService` (or a variant) is declared with.
SERVICE_OPTIONS: dict[str, Any] = {
    "name": "cnn_classifier",
    # On a CPU, TensorFlow uses every core of the worker; a GPU bento asks for one GPU.
    **({"resources": {"gpu": 1}} if SETTINGS.gpu else {}),
    **service_config(SETTINGS.tracing),
    **monitoring_options(),
    "traffic": {"timeout": 60},
}


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
#: large share of the event loop's CPU for a one-image request (py-spy).
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
    #: What this server answers with (`SERVING_VIEWS`, serving/model.py): its passes per image
    #: and their test accuracy in the model's run (null where the run did not measure it).
    served_views: int
    served_test_accuracy: float | None
    max_images_per_request: int
    #: The Keras backend the model was trained on (the model card's), and the one serving it.
    backend: str
    served_backend: str
    #: TensorFlow's CPU thread pools as it reports them; 0 is its default, and what JAX
    #: reports, which has none (serving/model.py).
    intra_op_threads: int
    inter_op_threads: int
    #: Batch-norm layers folded into the convolution or dense layer before them, and those
    #: computed in TensorFlow's fused inference kernel (pipeline/batch_norm.py).
    folded_batch_norm_layers: int
    fused_batch_norm_layers: int
    #: JAX: the batch sizes compiled at start-up, to which each model call is padded; empty
    #: under TensorFlow, whose one traced graph takes any size.
    compiled_batch_sizes: list[int]
    #: Programs compiled since start-up: 0 unless a model call met a shape never compiled.
    compiles_after_start: int
    #: The backend's speed-ups this server runs without, and why (serving/model.py).
    left_out: list[str]
    #: The most images in one model call, merged from concurrent requests.
    max_batch_size: int
    #: BentoML's OpenTelemetry spans, `on` or `off` (serving/http/tracing.py).
    tracing: str
    #: The package of the worker's asyncio event loop: `uvloop` where it is installed, as
    #: uvicorn picks it (pyproject.toml), else `asyncio`.
    event_loop: str = ""


class ClassifierService:
    """Validates and decodes inputs, runs the Keras model (batched), returns top-k labels."""

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        # TensorFlow loads here, in the worker: BentoML's supervisor process imports this
        # module too, and never holds a model.
        from serving import model

        card = self.card()
        served = model.load(
            self.bento_model.path_of("model.keras"),
            card,
            views=SETTINGS.views,
            gpu=SETTINGS.gpu,
            max_batch_size=SETTINGS.max_batch_size,
        )
        self._served = served
        # Warm-up: TensorFlow builds its kernels for each batch shape on first use, so the
        # first requests are not the slow ones (JAX compiled its sizes in `load`).
        for batch in (1, 8):
            self._probabilities(np.zeros((batch, *card.input_shape), dtype=np.float32))
        self.batcher = self.make_batcher(self._probabilities)
        self.class_names: list[str] = list(card.class_names)
        self.shape = ImageShape.of(card.input_shape)
        self.decoder = self.make_decoder(self.shape)
        self.monitor = Monitor(
            str(self.bento_model.tag), self.class_names, self.shape, SETTINGS.pixel_samples
        )
        self.reference = self._reference_summary()
        self.info = ModelInfo(
            model_tag=str(self.bento_model.tag),
            max_images_per_request=SETTINGS.max_images,
            intra_op_threads=served.pools.intra_op,
            inter_op_threads=served.pools.inter_op,
            folded_batch_norm_layers=served.batch_norm.folded,
            fused_batch_norm_layers=served.batch_norm.fused,
            served_backend=served.backend,
            compiled_batch_sizes=list(served.batch_sizes),
            compiles_after_start=0,
            left_out=list(served.left_out),
            max_batch_size=SETTINGS.max_batch_size,
            tracing="on" if SETTINGS.tracing else "off",
            served_views=served.views.count,
            served_test_accuracy=served.views.test_accuracy,
            **card.to_dict(),
        )
        freeze_startup_objects()

    # --- what a benchmark's variant may change (bench/variants.py) --------------------------

    @classmethod
    @functools.cache
    def card(cls) -> ModelCard:
        """The served model's card, read once from its BentoML metadata."""
        return ModelCard.from_dict(cls.bento_model.stored.info.metadata)

    def make_batcher(self, predict: Callable[[np.ndarray], np.ndarray]) -> EagerBatcher | None:
        """The eager batcher; None (a variant's choice) calls the model once per request."""
        return EagerBatcher(
            predict,
            max_batch_size=SETTINGS.max_batch_size,
            max_queued_images=SETTINGS.max_queued_images,
        )

    def make_decoder(self, shape: ImageShape) -> Decoder:
        """Decoding on the event loop, or for large images in a decoding process."""
        return Decoder(shape)

    # --- helpers -------------------------------------------------------------------------------

    def _reference_summary(self) -> dict[str, Any] | None:
        """What the live panel shows of the model's reference profile (pipeline/reference.py):
        the class mix and mean confidence of the model's answers on its validation split;
        None for a model packaged without one."""
        path = Path(self.bento_model.path_of(REFERENCE_FILE))
        if not path.is_file():
            return None
        profile = json.loads(path.read_text())
        confidences = profile["features"]["confidence"]
        return {
            **{key: profile[key] for key in ("split", "images", "predicted_prior")},
            "mean_confidence": sum(confidences) / len(confidences),
        }

    def _check_k(self, k: int) -> int:
        upper = len(self.class_names)
        if not 1 <= k <= upper:
            raise RequestError(
                f"k must be between 1 and {upper}, got {k}", HTTPStatus.UNPROCESSABLE_ENTITY
            )
        return k

    async def _decode(self, files: list[NamedImage]) -> tuple[np.ndarray, list[Source]]:
        """(N, H, W, C) model input and what each file was; an image that cannot be used is a
        client error."""
        try:
            return await self.decoder(files)
        except ImageDecodeError as exc:
            raise RequestError(str(exc), HTTPStatus(exc.status)) from None

    def _probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Softmax of the model's logits for a batch (N, H, W, C) of pixels in [0, 255]."""
        return softmax(self._served.forward(pixels.astype(np.float32, copy=False)))

    async def _predict(self, pixels: np.ndarray) -> np.ndarray:
        if self.batcher is not None:
            return await self.batcher(pixels)
        return await anyio.to_thread.run_sync(self._probabilities, pixels)

    async def _top_k(
        self, pixels: np.ndarray, k: int, started: float, sources: list[Source] | None = None
    ) -> JSONResponse:
        """`Predictions` for `pixels`, or 503 with Retry-After when the model's queue is full.
        Each answered request is logged for monitoring (serving/monitoring.py); `started` is
        when it came in, `sources` what its files were (None: the array endpoints)."""
        try:
            probs = await self._predict(pixels)
        except Overloaded as exc:
            # BentoML would answer any 5xx with a generic message and no Retry-After.
            return JSONResponse(
                [{"error": str(exc)}],
                status_code=HTTPStatus.SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(exc.retry_after_s)},
            )
        self.monitor.record(pixels, probs, sources, started)
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
        started = time.perf_counter()
        k = self._check_k(k)
        if not images:
            raise RequestError("no images: send one or more files in the field 'images'")
        if len(images) > SETTINGS.max_images:
            raise RequestError(
                f"{len(images)} images in one request; the limit is {SETTINGS.max_images}",
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            )
        files = [NamedImage(upload.data, f"image {i}") for i, upload in enumerate(images)]
        pixels, sources = await self._decode(files)
        return await self._top_k(pixels, k, started, sources)

    @bentoml.api(route="/classify_image")
    async def classify_image(self, image: bytes, /) -> Predictions:
        """One image as the raw request body (`Content-Type: image/*`): its top 3 labels.

        For curl: `curl --data-binary @shoe.png -H 'Content-Type: image/png' .../classify_image`.
        """
        started = time.perf_counter()
        pixels, sources = await self._decode([NamedImage(image, "body")])
        return await self._top_k(pixels, min(3, len(self.class_names)), started, sources)

    def _checked(self, read: Callable[[Any], np.ndarray], value: Any) -> np.ndarray:
        """The model's input from a client's array (serving/arrays.py); a client error else."""
        try:
            return arrays.checked_batch(read(value), self.shape, SETTINGS.max_images)
        except arrays.ArrayError as exc:
            raise RequestError(str(exc), exc.status) from None

    @bentoml.api
    async def classify_array(self, pixels: list, k: int = 3) -> Predictions:
        """A JSON batch of decoded images (N x H x W x C, values 0-255): top-k labels each."""
        started = time.perf_counter()
        k = self._check_k(k)
        return await self._top_k(self._checked(arrays.from_json, pixels), k, started)

    @bentoml.api
    async def classify_npy(self, array: UploadedFile, k: int = 3) -> Predictions:
        """The same batch as a NumPy `.npy` file (multipart field `array`, written by
        `numpy.save`; integers or floats): top-k labels each. One byte per uint8 value, and
        read without parsing."""
        started = time.perf_counter()
        k = self._check_k(k)
        return await self._top_k(self._checked(arrays.from_npy, array.data), k, started)

    @bentoml.api
    async def metadata(self) -> ModelInfo:
        """Which model answers: name, version, run id, classes, input shape, test accuracy."""
        loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
        return self.info.model_copy(
            update={
                "event_loop": loop,
                "compiles_after_start": self._served.compiles_after_start(),
            }
        )

    @bentoml.api
    async def live(self) -> dict:
        """What this worker answered lately, beside the training reference: the class mix
        and confidence of its last images (the demo page's live panel)."""
        return self.monitor.live(self.reference)


def configure(service: bentoml.Service) -> bentoml.Service:
    """`service` with the demo page at `/ui` and the HTTP layer's middleware in front of it."""
    inner = service.inner

    def model_file(name: str) -> Path:
        """A file in the served model's folder (what the demo page shows from it)."""
        return Path(inner.bento_model.stored.path_of(name))

    service.mount_asgi_app(
        demo.build_app(model_file, lambda: list(inner.card().class_names)), path="/ui"
    )
    if not SETTINGS.tracing:
        service.add_asgi_middleware(RequestIds)
    service.add_asgi_middleware(
        RequestGuard,
        token=SETTINGS.api_token,
        max_request_bytes=SETTINGS.max_request_bytes,
        max_bytes_in_flight=SETTINGS.max_bytes_in_flight,
    )
    return service


Classifier = configure(bentoml.service(**SERVICE_OPTIONS)(ClassifierService))
