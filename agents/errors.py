"""Errors of the bundles app, each with an HTTP status and a stable error type the API shows."""

from __future__ import annotations

from rest_framework import status

from lightfast_cloud.api_errors import ApiError, PayloadTooLarge


class BundleTooLarge(PayloadTooLarge):
    """The upload is larger than the organization's maximum bundle size."""

    default_detail = "The bundle is larger than this organization's maximum bundle size."


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


class StorageQuotaExceeded(ApiError):
    """The organization's bundle storage would exceed its plan."""

    status_code = status.HTTP_403_FORBIDDEN
    error_type = "quota_exceeded"
    default_detail = "This organization's bundle storage quota is used up."


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
