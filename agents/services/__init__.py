"""Writes to bundles, by subject: uploads, introspection, the version lifecycle (activation, rollback,
quarantine, deletion) and tool calls; every write is recorded in the audit log."""

from agents.services.introspection import (
    INTROSPECT_STALE_AFTER,
    INTROSPECT_UNCLAIMED_AFTER,
    MAX_INTROSPECT_ATTEMPTS,
    bundle_version_finish_introspection,
    bundle_version_introspect,
    bundle_versions_reap_stale,
)
from agents.services.tools import tool_invoke
from agents.services.uploads import TRANSFORM_TIMEOUT_S, UploadResult, bundle_upload
from agents.services.versions import (
    bundle_delete,
    bundle_rollback,
    bundle_version_activate,
    bundle_version_quarantine,
    bundle_version_quarantined,
    bundle_version_unquarantine,
)

__all__ = [
    "INTROSPECT_STALE_AFTER",
    "INTROSPECT_UNCLAIMED_AFTER",
    "MAX_INTROSPECT_ATTEMPTS",
    "TRANSFORM_TIMEOUT_S",
    "UploadResult",
    "bundle_delete",
    "bundle_rollback",
    "bundle_upload",
    "bundle_version_activate",
    "bundle_version_finish_introspection",
    "bundle_version_introspect",
    "bundle_version_quarantine",
    "bundle_version_quarantined",
    "bundle_version_unquarantine",
    "bundle_versions_reap_stale",
    "tool_invoke",
]
