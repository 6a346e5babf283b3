"""The demo page at `/ui`: drop an image, see the model's top labels, its card and its errors.

A small Starlette app mounted into the BentoML service (`@bentoml.asgi_app`). Everything it
serves ships in the bento: the page (`serving/ui/index.html`, no CDN, no external fonts) and,
from the served model's folder, the champion's confusion matrix and a few held-out test
images that packaging copied there from the MLflow run (pipeline/selection.py). The page
itself calls the service's own endpoints (`/metadata`, `/classify`) from the browser, with
the bearer token the visitor types when the service requires one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from pipeline.model_card import CONFUSION_MATRIX_FILE, EXAMPLES_DIR

PAGE = Path(__file__).parent / "ui" / "index.html"
EXAMPLE_NAME = re.compile(r"^\d{2}\.png$")


def build_app(model_file: Callable[[str], Path], class_names: Callable[[], list[str]]) -> Starlette:
    """The page's app; `model_file(name)` is a path in the served model's folder."""

    async def page(request) -> Response:
        return FileResponse(PAGE, media_type="text/html; charset=utf-8")

    async def confusion_matrix(request) -> Response:
        path = model_file(CONFUSION_MATRIX_FILE)
        if not path.is_file():
            return JSONResponse([{"error": "this model was packaged without one"}], 404)
        return FileResponse(path, media_type="image/png")

    async def examples(request) -> Response:
        folder = model_file(EXAMPLES_DIR)
        names = class_names()
        found = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
        return JSONResponse(
            [
                {"file": f"{EXAMPLES_DIR}/{name}", "label": names[int(name[:2])]}
                for name in found
                if EXAMPLE_NAME.match(name) and int(name[:2]) < len(names)
            ]
        )

    async def example(request) -> Response:
        name = request.path_params["name"]
        path = model_file(EXAMPLES_DIR) / name
        if not EXAMPLE_NAME.match(name) or not path.is_file():
            return JSONResponse([{"error": f"no example {name}"}], 404)
        return FileResponse(path, media_type="image/png")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/confusion_matrix.png", confusion_matrix),
            Route("/examples.json", examples),
            Route("/examples/{name}", example),
        ]
    )
