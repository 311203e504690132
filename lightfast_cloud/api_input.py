"""Strict API request bodies: a bounded UTF-8 JSON parser, serializers that reject unknown fields."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework import serializers
from rest_framework.parsers import BaseParser

from lightfast_cloud.api_errors import InvalidRequestBody, LightfastError, PayloadTooLarge


class MalformedJSON(LightfastError):
    code = "malformed_json"
    default_message = "The request body is not valid JSON."


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


class StrictJSONParser(BaseParser):
    """JSON bodies up to DATA_UPLOAD_MAX_MEMORY_SIZE, UTF-8 only, without NaN or Infinity.

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
            return json.loads(text, parse_constant=_refuse_constant)
        except ValueError as exc:
            position = (
                {"line": exc.lineno, "column": exc.colno} if isinstance(exc, json.JSONDecodeError) else None
            )
            raise MalformedJSON(f"The request body is not valid JSON: {exc}", detail=position) from exc


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
