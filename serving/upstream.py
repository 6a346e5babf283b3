"""Workarounds for BentoML 1.4.39 defects that turn bad client input into HTTP 500.

Each is pinned by a test in tests/test_service.py, which fails if BentoML changes the internals
used here. BentoML's multipart reader lets two kinds of client error escape as 500:
- a body that is not valid multipart (Starlette raises its own HTTP 400, which BentoML's
  endpoint wrapper does not recognise), and
- a binary file sent in a field that holds text, such as `k` (it is passed to `json.loads`,
  which raises `UnicodeDecodeError`, not the `JSONDecodeError` BentoML catches).
"""

from __future__ import annotations

from _bentoml_impl import serde
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
