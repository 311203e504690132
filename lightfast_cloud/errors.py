"""The one error family: `LightfastError` (code, message, detail) raised by services, and the one table from
its code to the HTTP status, the websocket close code, the websocket error frame and the SSE error chunk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

# Websocket close codes: 4000 + the HTTP status (4000-4999 are the application's; RFC 6455's 1013 "try
# again later" is one a server may not send through daphne's websocket library, which refuses it).
CLOSE_AUTH = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_RATE_LIMITED = 4429
CLOSE_TRY_AGAIN_LATER = 4503
CLOSE_SERVER_ERROR = 4500
CLOSE_INVALID = 4400


@dataclass(frozen=True)
class ErrorKind:
    """How a client is told about an error of one code: the HTTP status and the websocket close code."""

    http_status: int
    ws_close: int


# Every code a client can see. The websocket close code applies where the error ends the
# connection (refused at connect, credentials that stopped holding); elsewhere the socket gets an
# `error` frame and stays open.
ERROR_KINDS: dict[str, ErrorKind] = {
    "invalid_input": ErrorKind(400, CLOSE_INVALID),
    "invalid_request": ErrorKind(400, CLOSE_INVALID),
    "invalid_frame": ErrorKind(400, CLOSE_INVALID),
    "unknown_tool_call": ErrorKind(400, CLOSE_INVALID),
    "malformed_json": ErrorKind(400, CLOSE_INVALID),
    "organization_required": ErrorKind(400, CLOSE_INVALID),
    "invalid_bundle": ErrorKind(400, CLOSE_NOT_FOUND),
    "authentication_failed": ErrorKind(401, CLOSE_AUTH),
    "not_authenticated": ErrorKind(401, CLOSE_AUTH),
    "credentials_revoked": ErrorKind(401, CLOSE_AUTH),
    "credentials_expired": ErrorKind(401, CLOSE_AUTH),
    "origin_not_allowed": ErrorKind(403, CLOSE_AUTH),
    "permission_denied": ErrorKind(403, CLOSE_FORBIDDEN),
    "organization_suspended": ErrorKind(403, CLOSE_FORBIDDEN),
    "quota_exceeded": ErrorKind(403, CLOSE_FORBIDDEN),
    "scope_escalation": ErrorKind(403, CLOSE_FORBIDDEN),
    "expiry_escalation": ErrorKind(403, CLOSE_FORBIDDEN),
    "not_found": ErrorKind(404, CLOSE_NOT_FOUND),
    "unknown_tool": ErrorKind(404, CLOSE_NOT_FOUND),
    "conflict": ErrorKind(409, CLOSE_INVALID),
    "version_not_runnable": ErrorKind(409, CLOSE_NOT_FOUND),
    "payload_too_large": ErrorKind(413, CLOSE_INVALID),
    "unsupported_media_type": ErrorKind(415, CLOSE_INVALID),
    "rate_limited": ErrorKind(429, CLOSE_RATE_LIMITED),
    "rate_limit_unavailable": ErrorKind(503, CLOSE_TRY_AGAIN_LATER),
    "sandbox_crash": ErrorKind(503, CLOSE_TRY_AGAIN_LATER),
    "service_unavailable": ErrorKind(503, CLOSE_TRY_AGAIN_LATER),
    "server_error": ErrorKind(500, CLOSE_SERVER_ERROR),
}
# A code missing from the table (a sandbox or provider error type surfacing at the boundary).
DEFAULT_KIND = ErrorKind(400, CLOSE_INVALID)


def error_kind(code: str) -> ErrorKind:
    """The table's row for `code`."""
    return ERROR_KINDS.get(code, DEFAULT_KIND)


class LightfastError(Exception):
    """An error a client sees: a stable `code` (the table's key), a human message and a JSON detail.

    Subclasses name their code and default message; a raise may give another code (`code=`), as
    the transports do for the sandbox's own error types.
    """

    code: str = "invalid_input"
    default_message: ClassVar[str] = "The request could not be processed."
    # Set only where a client has always been answered otherwise than the table says for the code
    # (see the subclasses that set them); None: the table decides.
    http_status_override: ClassVar[int | None] = None
    ws_close_override: ClassVar[int | None] = None

    def __init__(self, message: str | None = None, *, code: str | None = None, detail: Any = None) -> None:
        if code is not None:
            self.code = code
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(f"{self.code}: {self.message}")

    @property
    def http_status(self) -> int:
        """The status REST and SSE answer with."""
        return self.http_status_override or error_kind(self.code).http_status

    @property
    def ws_close(self) -> int:
        """The close code of a websocket this error ends."""
        return self.ws_close_override or error_kind(self.code).ws_close

    def as_error(self) -> dict[str, Any]:
        """The API's error object: `{"type", "message", "detail"}`."""
        return {"type": self.code, "message": self.message, "detail": self.detail}


def error_body(error_type: str, message: str, detail: Any = None) -> dict[str, Any]:
    """The one JSON shape of every API error."""
    return {"error": {"type": error_type, "message": message, "detail": detail}}


def error_text(code: str, message: str) -> str:
    """The AI SDK's `errorText` of an error: `code: message`."""
    return f"{code}: {message}"


def ws_error_frame(error: LightfastError, *, run: str | None = None) -> dict[str, Any]:
    """The websocket `error` frame: the AI SDK's `errorText` plus the API's error object."""
    frame: dict[str, Any] = {"type": "error", "errorText": error_text(error.code, error.message)}
    frame["error"] = error.as_error()
    if run is not None:
        frame["run"] = run
    return frame


def sse_error_chunk(error: LightfastError) -> dict[str, Any]:
    """The SSE `error` chunk (AI SDK UI message stream) that ends a stream."""
    return {"type": "error", "errorText": error_text(error.code, error.message)}
