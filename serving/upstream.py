"""Workarounds for BentoML 1.4.39 internals, each pinned by a test in tests/test_service.py that
fails if BentoML changes what is used here.

Where uploads go: BentoML writes each uploaded file into a per-request temporary directory
from a pool it creates in the system temp directory, with no setting to move it.

Bad input answered 500: BentoML's multipart reader lets two kinds of client error escape:
- a body that is not valid multipart (Starlette raises its own HTTP 400, which BentoML's
  endpoint wrapper does not recognise), and
- a binary file sent in a field that holds text, such as `k` (it is passed to `json.loads`,
  which raises `UnicodeDecodeError`, not the `JSONDecodeError` BentoML catches).
"""

from __future__ import annotations

import os

from _bentoml_impl import serde
from bentoml._internal import context
from bentoml._internal.utils.filesystem import TempfilePool
from bentoml.exceptions import BadInput
from starlette.exceptions import HTTPException


class ClientErrorMultipartSerde(serde.MultipartSerde):
    """BentoML's multipart reader, with malformed input answered 400 and a reason."""

    async def parse_request(self, request, cls):
        try:
            return await super().parse_request(request, cls)
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise
            raise BadInput(f"malformed multipart/form-data body: {exc.detail}") from None
        except UnicodeDecodeError:
            raise BadInput(
                "a form field that takes text or a number holds binary data; "
                "send image files in the field 'images'"
            ) from None


def install() -> None:
    """Make BentoML read multipart (and url-encoded) request bodies with the class above."""
    for media_type, reader in list(serde.ALL_SERDE.items()):
        if reader is serde.MultipartSerde:
            serde.ALL_SERDE[media_type] = ClientErrorMultipartSerde  # type: ignore[index]


def keep_uploads_in(directory: str) -> None:
    """Make BentoML create its per-request upload directories under `directory`."""
    os.makedirs(directory, exist_ok=True)
    context.request_tempdir_pool = TempfilePool(prefix="bentoml-request-", dir=directory)
