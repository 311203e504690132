"""Errors of the bundles app, each with an HTTP status and a stable error type the API shows."""

from __future__ import annotations

from rest_framework import status

from lightfast_cloud.api_errors import ApiError, PayloadTooLarge
from organizations.quotas import QUOTA_MAX_BUNDLE


class BundleTooLarge(PayloadTooLarge):
    """The upload is larger than the plan's maximum bundle size: a 413 whose body names the quota.

    Issue 6 reports quotas as `quota_exceeded` (403); an oversized upload stays a 413 (what HTTP
    clients and proxies expect of a body that is too large), but its detail carries the same
    fields as a quota error: `quota` (`max_bundle_bytes`), `limit`, and `resets_at` (None: a plan
    limit does not reset with time), plus `limit_bytes` and, when known, the upload's `bytes`.
    """

    default_detail = "The bundle is larger than this organization's maximum bundle size."

    def __init__(self, *, limit: int, size: int | None = None) -> None:
        detail: dict[str, object] = {
            "quota": QUOTA_MAX_BUNDLE,
            "limit": limit,
            "limit_bytes": limit,
            "resets_at": None,
        }
        if size is not None:
            detail["bytes"] = size
        super().__init__(
            f"The bundle is larger than this organization's plan limit {QUOTA_MAX_BUNDLE} of {limit} bytes "
            "(a limit of its plan: an operator can raise it).",
            detail=detail,
        )


class InvalidBundle(ApiError):
    """The upload cannot be a bundle at all: empty, not UTF-8, a syntax error, a forbidden import."""

    status_code = status.HTTP_400_BAD_REQUEST
    error_type = "invalid_bundle"
    default_detail = "The file is not a valid bundle."

    def __init__(
        self, message: str | None = None, *, detail: object = None, error_type: str | None = None
    ) -> None:
        super().__init__(message, detail=detail)
        if error_type:
            self.error_type = error_type


class TransformUnavailable(ApiError):
    """The bundle transform itself failed (not the bundle): a 503, the details only in the server log."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    error_type = "sandbox_crash"
    default_detail = "The bundle could not be checked right now; try again."


class InvalidUpload(ApiError):
    """The request does not carry a bundle the way the API expects (no file, bad slug, wrong type)."""

    status_code = status.HTTP_400_BAD_REQUEST
    error_type = "invalid_request"
    default_detail = "The upload request is malformed."


class UnsupportedUploadType(ApiError):
    """Neither multipart/form-data nor application/javascript."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    error_type = "unsupported_media_type"
    default_detail = (
        "Upload a bundle as multipart/form-data (field `file`) or as an application/javascript body."
    )


class VersionNotRunnable(ApiError):
    """The version (or the bundle's lack of one) cannot run or be made active."""

    status_code = status.HTTP_409_CONFLICT
    error_type = "version_not_runnable"
    default_detail = "This bundle version cannot run."


class UnknownTool(ApiError):
    """The active version's manifest has no such tool (or agent)."""

    status_code = status.HTTP_404_NOT_FOUND
    error_type = "unknown_tool"
    default_detail = "No such tool in the bundle's active version."


class AmbiguousTool(ApiError):
    """Several agents have a tool of this name and the request did not say which."""

    status_code = status.HTTP_400_BAD_REQUEST
    error_type = "invalid_input"
    default_detail = "Several agents have this tool; name the agent."
