"""BentoML's request readers, with client errors answered 400 and no URL ever fetched.

Bad input answered 500: BentoML's multipart reader lets these client errors escape:
- a body that is not valid multipart (Starlette raises its own HTTP 400, which BentoML's
  endpoint wrapper does not recognise);
- a binary file sent in a field that holds text, such as `k` (it is passed to `json.loads`,
  which raises `UnicodeDecodeError`, not the `JSONDecodeError` BentoML catches);
- text in a field that holds text as JSON nested thousands deep (`RecursionError`) or a number
  of thousands of digits (`ValueError` from Python's integer-string limit).

Text fetched as a URL: BentoML reads text sent in a file field (`images`), and a JSON body
that is only a URL sent to an endpoint with file fields, as a URL to download from. That is a
server-side fetch of whatever the client names (it answered 500 here only because a module it
needs is not installed). Here a file field takes files only and URLs are never fetched: 400.

`install()` puts both readers in BentoML's table of readers by media type (serving/http/
__init__.py calls it); tests/test_service.py sends each of these inputs over HTTP.
"""

from __future__ import annotations

from _bentoml_impl import serde
from bentoml.exceptions import BadInput
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException


class ClientErrorMultipartSerde(serde.MultipartSerde):
    """BentoML's multipart reader, with malformed input answered 400 and a reason, and file
    fields that take uploaded files only."""

    @staticmethod
    async def ensure_file(obj):
        if isinstance(obj, UploadFile):
            return obj
        raise BadInput(
            "a file field holds text: send image files (multipart parts with a filename); "
            "URLs are not fetched"
        )

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
        except ValidationError:
            raise
        except (RecursionError, ValueError):
            raise BadInput(
                "a form field holds JSON nested too deeply or a number with too many digits"
            ) from None


class NoFetchJSONSerde(serde.JSONSerde):
    """BentoML's JSON reader (also used for raw bodies) without the download of a body that is
    a URL, and with an empty raw body refused as empty."""

    async def parse_request(self, request, cls):
        body = await request.body()
        if not body and getattr(cls, "__root_input__", False):
            # BentoML would read an empty body as the two bytes `{}`: 415, "not an image".
            raise BadInput("the request body is empty: send the image's bytes as the body")
        return self.deserialize_model(serde.Payload((body,), metadata=request.headers), cls)


def install() -> None:
    """Put the readers above in place of BentoML's, before its app is built."""
    for media_type, reader in list(serde.ALL_SERDE.items()):
        if reader is serde.MultipartSerde:
            serde.ALL_SERDE[media_type] = ClientErrorMultipartSerde  # type: ignore[index]
        elif reader is serde.JSONSerde:
            serde.ALL_SERDE[media_type] = NoFetchJSONSerde  # type: ignore[index]
