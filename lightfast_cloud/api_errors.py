"""The API's single error format, `{"error": {"type", "message", "detail"}}`, for every failure under /api/:
the DRF exception handler, handler404/handler500, and a middleware for everything else."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from django.core.exceptions import (
    BadRequest,
    PermissionDenied,
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
)
from django.db import DataError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, UnreadablePostError
from django.http.multipartparser import MultiPartParserError
from django.views import defaults
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers
from rest_framework.response import Response

from lightfast_cloud.errors import LightfastError, error_body

logger = logging.getLogger("lightfast_cloud.api")

API_PATH_PREFIX = "/api/"
# Retry-After of a 503 answered because the database was unreachable.
DATABASE_RETRY_AFTER_S = 2


class PayloadTooLarge(LightfastError):
    code = "payload_too_large"
    default_message = "The request body is too large."


class InvalidRequestBody(LightfastError):
    code = "invalid_request"
    default_message = "The request body could not be read."


# Error types for DRF's own exceptions; the first matching class wins.
_DRF_ERROR_TYPES: tuple[tuple[type[Exception], str], ...] = (
    (drf_exceptions.ValidationError, "invalid_input"),
    (drf_exceptions.ParseError, "invalid_request"),
    (drf_exceptions.AuthenticationFailed, "authentication_failed"),
    (drf_exceptions.NotAuthenticated, "not_authenticated"),
    (drf_exceptions.PermissionDenied, "permission_denied"),
    (drf_exceptions.NotFound, "not_found"),
    (drf_exceptions.MethodNotAllowed, "method_not_allowed"),
    (drf_exceptions.NotAcceptable, "not_acceptable"),
    (drf_exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (drf_exceptions.Throttled, "rate_limited"),
)

# Error types by status, for responses that did not come from an exception we know.
_STATUS_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
}


def error_response(
    status_code: int, error_type: str | None = None, message: str | None = None, detail: Any = None
) -> JsonResponse:
    """A plain Django JSON error response, for code paths outside DRF."""
    error_type = error_type or _STATUS_ERROR_TYPES.get(status_code, "error")
    message = message or f"{HTTPStatus(status_code).phrase}."
    return JsonResponse(error_body(error_type, message, detail), status=status_code)


def is_api_request(request: HttpRequest) -> bool:
    """True for paths whose errors must be JSON."""
    return request.path_info.startswith(API_PATH_PREFIX)


def lightfast_error_response(exc: LightfastError) -> JsonResponse:
    """A service's error as a plain Django response (code paths outside DRF)."""
    return error_response(exc.http_status, exc.code, exc.message, exc.detail)


def _drf_error_type(exc: drf_exceptions.APIException) -> str:
    for exc_class, error_type in _DRF_ERROR_TYPES:
        if isinstance(exc, exc_class):
            return error_type
    return _STATUS_ERROR_TYPES.get(exc.status_code, "error")


def _translate_django_exception(exc: Exception) -> Exception:
    """Body-reading errors Django raises inside a view become API errors with the right status."""
    if isinstance(exc, RequestDataTooBig):
        return PayloadTooLarge(str(exc) or None)
    if isinstance(exc, TooManyFieldsSent):
        return InvalidRequestBody("The request has too many fields.")
    if isinstance(exc, UnreadablePostError):
        return InvalidRequestBody("The request body could not be read completely.")
    if isinstance(exc, UnicodeDecodeError):
        return InvalidRequestBody("The request body is not valid UTF-8.")
    if isinstance(exc, MultiPartParserError):
        # A multipart Content-Type without a boundary, or a body that does not follow it.
        return InvalidRequestBody(f"The multipart body is malformed: {exc}")
    return exc


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF EXCEPTION_HANDLER: every API exception rendered in the one error format."""
    # Imported here: authentication classes import this module while rest_framework.views is still loading.
    from rest_framework.views import exception_handler as drf_exception_handler

    exc = _translate_django_exception(exc)
    if isinstance(exc, LightfastError):
        return Response(error_body(exc.code, exc.message, exc.detail), status=exc.http_status)
    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: let it propagate so ApiErrorMiddleware logs it and answers a JSON 500.
        return None
    if isinstance(exc, Http404):
        exc = drf_exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = drf_exceptions.PermissionDenied()
    assert isinstance(exc, drf_exceptions.APIException)
    if isinstance(exc, drf_exceptions.ValidationError):
        message, detail = "The request body has invalid fields.", exc.detail
        if isinstance(detail, list):
            detail = {"non_field_errors": detail}
    else:
        message, detail = str(exc.detail), None
    response.data = error_body(_drf_error_type(exc), message, detail)
    return response


def api_page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: JSON under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return error_response(404, "not_found", f"No route or object at {request.path}.")
    return defaults.page_not_found(request, exception)


def api_server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/, Django's page elsewhere."""
    if is_api_request(request):
        return error_response(500, "server_error", "Internal server error. It has been logged.")
    return defaults.server_error(request)


TEXT_ERROR_HEADER = "X-Lightfast-Error"


class ApiErrorMiddleware:
    """Under /api/, turn every exception and every non-JSON error response into the JSON error format.

    Place it high in MIDDLEWARE so it also sees what other middleware raise or answer.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not is_api_request(request):
            return self.get_response(request)
        response = self.get_response(request)
        # `X-Lightfast-Error`: a deliberate readable-text error (the chat route to AI SDK clients).
        deliberate_text = response.has_header(TEXT_ERROR_HEADER)
        if response.status_code >= 400 and not _is_json(response) and not deliberate_text:
            return self._json_replacement(response)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Exceptions escaping a view under /api/ become JSON; a 500 is logged with its traceback."""
        if not is_api_request(request):
            return None
        exception = _translate_django_exception(exception)
        if isinstance(exception, LightfastError):
            return lightfast_error_response(exception)
        if isinstance(exception, drf_exceptions.APIException):
            response = api_exception_handler(exception, {"request": request})
            assert response is not None
            return JsonResponse(response.data, status=response.status_code)
        if isinstance(exception, Http404):
            return error_response(404, "not_found", f"No route or object at {request.path}.")
        if isinstance(exception, PermissionDenied):
            return error_response(403, "permission_denied", "You do not have permission to do this.")
        if isinstance(exception, BadRequest | SuspiciousOperation):
            logger.warning("bad request to %s: %s", request.path, exception)
            return error_response(400, "invalid_request", "The request is malformed.")
        if isinstance(exception, DataError):
            # A value the database cannot take (text with NUL, a number out of its range) that no
            # earlier check refused: the request's fault, not the server's.
            logger.warning("database refused a value of %s %s: %s", request.method, request.path, exception)
            return error_response(400, "invalid_input", "The request holds a value that cannot be stored.")
        if isinstance(exception, OperationalError | InterfaceError):
            # The database refused or dropped the connection (a restart, a failover; SQLite busy
            # past its timeout): nothing is wrong with the request, try it again shortly.
            logger.warning("database unreachable for %s %s: %s", request.method, request.path, exception)
            unavailable = error_response(
                503, "service_unavailable", "The database is unreachable at the moment; try again shortly."
            )
            unavailable["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
            return unavailable
        logger.error("unhandled error on %s %s", request.method, request.path, exc_info=exception)
        return error_response(500, "server_error", "Internal server error. It has been logged.")

    def _json_replacement(self, response: HttpResponse) -> JsonResponse:
        """An error response some other layer rendered as HTML or text, in the JSON format."""
        status_code = response.status_code
        replacement = error_response(status_code)
        if status_code == 405 and response.has_header("Allow"):
            replacement["Allow"] = response["Allow"]
            replacement.content = json.dumps(
                error_body("method_not_allowed", f"Method not allowed; allowed: {response['Allow']}.")
            ).encode()
        for header in ("Retry-After", "WWW-Authenticate"):
            if response.has_header(header):
                replacement[header] = response[header]
        return replacement


def _is_json(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("application/json")


class ErrorSerializer(serializers.Serializer):
    """Schema of the `error` object."""

    type = serializers.CharField(help_text="Stable machine-readable error type, e.g. `invalid_input`.")
    message = serializers.CharField(help_text="Human-readable explanation.")
    detail = serializers.JSONField(allow_null=True, help_text="Field errors or other specifics, or null.")


class ErrorResponseSerializer(serializers.Serializer):
    """Schema of every API error response."""

    error = ErrorSerializer()
