"""Strict API input: text every database can store, a bounded UTF-8 JSON parser, serializers that reject
unknown fields."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework import serializers
from rest_framework.parsers import BaseParser

from lightfast_cloud.api_errors import (
    InvalidRequestBody,
    LightfastError,
    PayloadTooLarge,
    error_response,
    is_api_request,
)

# What PostgreSQL cannot hold in text or JSON: NUL, and UTF-16 surrogates without their pair (not
# UTF-8 at all). Refused at the door on every database, so a request means the same on SQLite.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
UNSTORABLE_MESSAGE = "Text may not contain NUL characters or unpaired UTF-16 surrogates."


def unstorable_text(value: Any) -> str | None:
    """Where the first string of a parsed JSON value (object keys included) holds what no database can
    store (`$.messages[0].text`), or None when there is none."""
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                key = str(key)
                if _UNSTORABLE.search(key):
                    return path
                stack.append((f"{path}.{key}", child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(item))
    return None


class UnstorableText(LightfastError):
    code = "invalid_input"
    default_message = UNSTORABLE_MESSAGE


def storable_or_refused(value: Any) -> Any:
    """`value` when every string in it can be stored; raises UnstorableText (400) naming where otherwise."""
    path = unstorable_text(value)
    if path is not None:
        raise UnstorableText(detail={"path": path})
    return value


class RequestTextMiddleware:
    """Refuse a path or query string holding a NUL (or an unpaired surrogate) before any view looks it up.

    A lookup of such a value failed on PostgreSQL (500) and found nothing on SQLite; no object can
    be named so, and no filter can match it, so the request is refused as malformed, whatever the
    route: 400 `invalid_request` (JSON under /api/, plain text elsewhere), naming the parameter.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        where = self._unstorable(request)
        if where is None:
            return self.get_response(request)
        message = f"The {where} holds a NUL character or an unpaired UTF-16 surrogate."
        if is_api_request(request):
            return error_response(400, "invalid_request", message, {"parameter": where})
        return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")

    @staticmethod
    def _unstorable(request: HttpRequest) -> str | None:
        if _UNSTORABLE.search(request.path_info):
            return "path"
        for key, values in request.GET.lists():
            if _UNSTORABLE.search(key) or any(_UNSTORABLE.search(value) for value in values):
                return f"query parameter {key!r}"
        return None


class MalformedJSON(LightfastError):
    code = "malformed_json"
    default_message = "The request body is not valid JSON."


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(BaseParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE, UTF-8 only, without NaN or Infinity, and only text
    every database can store (`storable_or_refused`).

    DRF's own JSONParser reads the raw stream, so Django's body size limit never
    applies to it; this one enforces the limit itself, also for chunked bodies
    that carry no Content-Length.
    """

    media_type = "application/json"

    def parse(
        self,
        stream: IO[bytes] | None,
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Read at most the limit plus one byte, then decode and parse."""
        limit: int = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(
                f"The JSON body is larger than {limit} bytes.", detail={"limit_bytes": limit}
            )
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(
                f"The JSON body is larger than {limit} bytes.", detail={"limit_bytes": limit}
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestBody(
                "The request body is not valid UTF-8.", detail={"byte_offset": exc.start}
            ) from exc
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            position = (
                {"line": exc.lineno, "column": exc.colno} if isinstance(exc, json.JSONDecodeError) else None
            )
            raise MalformedJSON(f"The request body is not valid JSON: {exc}", detail=position) from exc
        return storable_or_refused(value)


class StrictSerializer(serializers.Serializer):
    """A serializer that rejects fields it does not declare instead of silently dropping them."""

    def to_internal_value(self, data: Any) -> Any:
        """Validate declared fields, then fail on any key the serializer does not know."""
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(key) for key in data if key not in writable)
            if unknown:
                raise serializers.ValidationError({key: ["Unknown field."] for key in unknown})
        return super().to_internal_value(data)
