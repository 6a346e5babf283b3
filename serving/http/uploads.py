"""Uploaded files handed to an endpoint from memory, never written to disk.

BentoML treats any `pathlib.PurePath` annotation as a multipart file field. For `Path` itself
it writes every uploaded file into a per-request temporary directory, and the endpoint reads
it back; BentoML unlinks it after the response: for a many-image request, much of the worker's
CPU goes to creating, writing, reading and unlinking temporary files.
`UploadedFile` is a `PurePath` too, so BentoML still reads the field as files (multipart form,
OpenAPI docs, its Python client), but validation keeps the bytes in memory.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from pydantic_core import PydanticCustomError, core_schema
from starlette.datastructures import UploadFile


class UploadedFile(PurePosixPath):
    """An uploaded file: its name as the client sent it (a pure path, never on disk), its
    declared media type and its content in `data`."""

    data: bytes
    content_type: str | None

    @classmethod
    def of(cls, data: bytes, filename: str | None, content_type: str | None) -> UploadedFile:
        upload = cls(PurePosixPath(filename).name if filename else "upload")
        upload.data = data
        upload.content_type = content_type
        return upload

    @classmethod
    def _validate(cls, value: Any) -> UploadedFile:
        if isinstance(value, UploadedFile):
            return value
        if isinstance(value, UploadFile):
            return cls.of(value.file.read(), value.filename, value.content_type)
        if isinstance(value, bytes):
            return cls.of(value, None, None)
        raise PydanticCustomError("file_type", "expected an uploaded file")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.data),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        # What BentoML's own file fields publish, so its client and the docs treat it alike.
        if handler.mode == "validation":
            return {"type": "file", "format": "binary"}
        return {"type": "string", "format": "binary"}
