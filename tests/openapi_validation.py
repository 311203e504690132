"""Every API response the test suite receives is validated against the generated OpenAPI schema.

`openapi_response_validate` is called for each response of Django's test client under /api/v1/
(tests/conftest.py patches the client). Needs openapi-core (dev extras); without it the check is off
and `tests/organizations/test_schema.py` says so with a skip.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.http.response import HttpResponseBase, StreamingHttpResponse

try:
    from openapi_core import OpenAPI
    from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
    from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound

    AVAILABLE = True
except ImportError:  # pragma: no cover - openapi-core missing from the environment
    AVAILABLE = False

API_PREFIX = "/api/v1/"
# Not API operations: the schema and its docs page.
UNDOCUMENTED = ("/api/v1/schema/", "/api/v1/docs/")


@functools.cache
def schema_dict() -> dict[str, Any]:
    """The schema as the server generates it, as plain JSON data."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    loaded: dict[str, Any] = json.loads(json.dumps(schema, default=str))
    return loaded


@functools.cache
def openapi() -> Any:
    """The schema loaded into openapi-core, once."""
    return OpenAPI.from_dict(schema_dict())


def _stream_validate(request: Any, response: HttpResponseBase) -> None:
    """A stream is not read here: its status and media type must be documented for the operation."""
    pattern = _Request(request).path_pattern
    operation = schema_dict()["paths"].get(pattern, {}).get((request.method or "").lower())
    where = f"{request.method} {request.path} -> {response.status_code}"
    assert operation is not None, f"{where}: {pattern} is not in the OpenAPI schema"
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, f"{where}: status not documented"
    media = str(response.get("Content-Type", "")).split(";")[0].strip()
    assert media in documented.get("content", {}), f"{where}: {media} not documented"


def openapi_response_validate(response: HttpResponseBase) -> None:
    """Raise AssertionError when `response` (with `.wsgi_request`) disagrees with the schema."""
    request = getattr(response, "wsgi_request", None)
    if not AVAILABLE or request is None or not request.path.startswith(API_PREFIX):
        return
    if request.path.startswith(UNDOCUMENTED) or request.method == "OPTIONS":
        return  # CORS preflights are answered before any operation (organizations.cors)
    if request.resolver_match is None or settings.ROOT_URLCONF != "lightfast_cloud.urls":
        return  # no route (the JSON 404 of api_page_not_found), or a test's own URLconf
    if isinstance(response, StreamingHttpResponse):
        _stream_validate(request, response)  # an SSE stream: the status and the media type
        return
    api = openapi()
    openapi_request = _Request(request)
    try:
        api.validate_response(openapi_request, _Response(response))
    except (PathNotFound, OperationNotFound):
        # A method the route does not have (the 405 tests): nothing in the schema to agree with.
        if response.status_code != 405:
            raise AssertionError(f"{request.method} {request.path} is not in the OpenAPI schema") from None
    except Exception as exc:  # noqa: BLE001 - every validation failure is a test failure
        detail = "; ".join(str(error) for error in getattr(exc, "schema_errors", []) or []) or str(exc)
        raise AssertionError(
            f"{request.method} {request.path} -> {response.status_code} disagrees with the OpenAPI schema: "
            f"{type(exc).__name__}: {detail}\nbody: {_body(response)[:500]!r}"
        ) from exc


def _body(response: HttpResponseBase) -> bytes:
    return response.content if isinstance(response, HttpResponse) else b""


class _Request(DjangoOpenAPIRequest if AVAILABLE else object):  # type: ignore[misc]
    """DjangoOpenAPIRequest without the body, which the view has consumed (not needed for responses)."""

    @property
    def body(self) -> bytes:
        return b""


def _Response(response: HttpResponseBase) -> Any:  # noqa: N802 - reads as the class it returns
    return DjangoOpenAPIResponse(response)  # type: ignore[arg-type]
