"""Errors of the bundles app (uploads, versions, tool calls), in the platform's error family."""

from __future__ import annotations

from lightfast_cloud.api_errors import PayloadTooLarge
from lightfast_cloud.errors import LightfastError
from organizations.quotas import QUOTA_MAX_BUNDLE


class BundleTooLarge(PayloadTooLarge):
    """The upload is larger than the plan's maximum bundle size: a 413 whose body names the quota.

    Quotas are `quota_exceeded` (403); an oversized upload stays a 413 (what HTTP clients and
    proxies expect of a body that is too large), but its detail carries the same
    fields as a quota error: `quota` (`max_bundle_bytes`), `limit`, and `resets_at` (None: a plan
    limit does not reset with time), plus `limit_bytes` and, when known, the upload's `bytes`.
    """

    default_message = "The bundle is larger than this organization's maximum bundle size."

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


class InvalidBundle(LightfastError):
    """The upload cannot be a bundle at all: empty, not UTF-8, a syntax error, a forbidden import.

    Raised with the sandbox's own code (`code=`) when the transform refused the bundle; whatever
    that code, the bundle is the client's fault: 400.
    """

    code = "invalid_bundle"
    default_message = "The file is not a valid bundle."
    http_status_override = 400


class TransformUnavailable(LightfastError):
    """The bundle transform itself failed (not the bundle): a 503, the details only in the server log."""

    code = "sandbox_crash"
    default_message = "The bundle could not be checked right now; try again."


class InvalidUpload(LightfastError):
    """The request does not carry a bundle the way the API expects (no file, bad slug, wrong type)."""

    code = "invalid_request"
    default_message = "The upload request is malformed."


class UnsupportedUploadType(LightfastError):
    """Neither multipart/form-data nor application/javascript."""

    code = "unsupported_media_type"
    default_message = (
        "Upload a bundle as multipart/form-data (field `file`) or as an application/javascript body."
    )


class VersionNotRunnable(LightfastError):
    """The version (or the bundle's lack of one) cannot run or be made active."""

    code = "version_not_runnable"
    default_message = "This bundle version cannot run."


class UnknownTool(LightfastError):
    """The active version's manifest has no such tool (or agent)."""

    code = "unknown_tool"
    default_message = "No such tool in the bundle's active version."


class AmbiguousTool(LightfastError):
    """Several agents have a tool of this name and the request did not say which."""

    code = "invalid_input"
    default_message = "Several agents have this tool; name the agent."
