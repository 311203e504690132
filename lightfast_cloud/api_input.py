"""Strict API input: no NUL in paths and query strings, a bounded UTF-8 JSON parser, query parameters as
the schema says, serializers that reject unknown fields and values of another type."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import IO, Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from rest_framework import serializers
from rest_framework.parsers import BaseParser

from execution.sandbox.values import clean_value
from lightfast_cloud.api_errors import (
    InvalidRequestBody,
    LightfastError,
    PayloadTooLarge,
    error_response,
    is_api_request,
)

# What PostgreSQL cannot hold in text or JSON: NUL, and UTF-16 surrogates without their pair (not
# UTF-8 at all). JSON bodies and websocket frames get the platform's value rule for them (U+FFFD,
# `execution.sandbox.values.clean_value`); in a path or query string they name nothing: refused.
_UNSTORABLE = re.compile("[\\x00\\ud800-\\udfff]")


def unstorable(text: str) -> bool:
    """True when `text` holds what no database can store (NUL, an unpaired surrogate)."""
    return _UNSTORABLE.search(text) is not None


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
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE, UTF-8 only, without NaN or Infinity; NUL and unpaired
    surrogates in its strings become U+FFFD (`clean_value`), so every database can store them.

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
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
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
        # Text no database can store follows the platform's one rule (U+FFFD), as tool outputs do.
        return clean_value(value)


_INTEGER = re.compile("-?[0-9]{1,19}")


class InvalidQuery(LightfastError):
    code = "invalid_request"
    default_message = "A query parameter is invalid."


def query_value(request: HttpRequest, name: str) -> str | None:
    """The query parameter `name` (None when absent); given twice it is refused: none of ours is a list."""
    values = request.GET.getlist(name)
    if len(values) > 1:
        raise InvalidQuery(f"`{name}` is given more than once.", detail={"parameter": name})
    return values[0] if values else None


def query_int(
    request: HttpRequest, name: str, *, default: int, minimum: int = 0, maximum: int = 2_000_000_000
) -> int:
    """An integer query parameter within [minimum, maximum] (as the schema says), else a 400."""
    raw = query_value(request, name)
    if raw is None:
        return default
    if not _INTEGER.fullmatch(raw) or not minimum <= int(raw) <= maximum:
        raise InvalidQuery(
            f"`{name}` must be an integer from {minimum} to {maximum}.", detail={"parameter": name}
        )
    return int(raw)


def query_number(request: HttpRequest, name: str, *, default: float, minimum: float, maximum: float) -> float:
    """A number query parameter within [minimum, maximum], else a 400."""
    raw = query_value(request, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not minimum <= value <= maximum:  # NaN fails too
        raise InvalidQuery(
            f"`{name}` must be a number from {minimum:g} to {maximum:g}.", detail={"parameter": name}
        )
    return value


def query_choice(request: HttpRequest, name: str, choices: list[str]) -> str | None:
    """A query parameter that must be one of `choices` (None when absent), else a 400."""
    raw = query_value(request, name)
    if raw is not None and raw not in choices:
        raise InvalidQuery(f"`{name}` must be one of {', '.join(choices)}.", detail={"parameter": name})
    return raw


def json_type_error(field: serializers.Field, value: Any) -> str | None:
    """Why `value` is not of the JSON type `field` takes (the schema's), or None.

    DRF coerces (`0` becomes the string "0", "true" and 1 become True, "12" becomes 12); the API
    takes what its schema says and nothing else, so a client's type mistake is a 400 rather than a
    guess. Null is left to the field's own `allow_null`.
    """
    if value is None:
        return None
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
        return None if whole and not isinstance(value, bool) else "Must be an integer."
    if isinstance(field, serializers.FloatField):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number else "Must be a number."
    if isinstance(field, serializers.CharField | serializers.ChoiceField):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Must be a list."
        return next((error for item in value if (error := json_type_error(field.child, item))), None)
    if isinstance(field, serializers.DictField):
        if not isinstance(value, dict):
            return "Must be an object."
        return next((error for item in value.values() if (error := json_type_error(field.child, item))), None)
    return None


class StrictSerializer(serializers.Serializer):
    """A serializer that takes exactly what its schema says: unknown fields and values of another JSON
    type are refused instead of dropped or coerced (its schema says `additionalProperties: false`)."""

    def to_internal_value(self, data: Any) -> Any:
        """Fail on any key the serializer does not know and on values of the wrong type, then validate."""
        if isinstance(data, Mapping):
            writable = {name: field for name, field in self.fields.items() if not field.read_only}
            errors = {str(key): ["Unknown field."] for key in data if key not in writable}
            for name, field in writable.items():
                if name in data and (error := json_type_error(field, data[name])):
                    errors[name] = [error]
            if errors:
                raise serializers.ValidationError(dict(sorted(errors.items())))
        return super().to_internal_value(data)
