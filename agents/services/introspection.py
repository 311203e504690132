"""Introspection of an uploaded version (the Celery task's work) and the reaper of stale ones."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from agents.models import BundleVersion, VersionStatus
from agents.selectors import (
    INTROSPECT_LIMITS,
    sandbox_settings_for,
    transformed_bundle_for,
)
from agents.services.versions import bundle_version_make_active, version_introspection_enqueue
from agents.storage import storage_read
from execution.sandbox import api as sandbox_api
from execution.sandbox.errors import SANDBOX_CRASH, TIMEOUT, SandboxError
from organizations.quotas import quota_meter_sandbox_cpu
from organizations.services import Actor, audit_record

logger = logging.getLogger("agents.services")

# A claimed introspection that has not finished after this long crashed (the task's hard limit is lower).
INTROSPECT_STALE_AFTER = timedelta(seconds=150)
# A version never claimed after this long lost its task message (broker down at enqueue time).
INTROSPECT_UNCLAIMED_AFTER = timedelta(minutes=10)
MAX_INTROSPECT_ATTEMPTS = 3


def bundle_version_introspect(*, version_id: int, organization_id: int) -> BundleVersion | None:
    """Run introspection of a validating version in the sandbox and record `ready` or `rejected`.

    Returns None when the version does not exist in that organization or is no longer validating
    (a redelivered or duplicate task). Safe to run twice: only the first result is recorded.
    """
    claimed = BundleVersion.objects.filter(
        pk=version_id,
        organization_id=organization_id,
        status=VersionStatus.VALIDATING,
        bundle__deleted_at__isnull=True,
    ).update(introspect_attempts=F("introspect_attempts") + 1, introspect_started_at=timezone.now())
    if not claimed:
        return None
    version = BundleVersion.objects.select_related("bundle", "organization").get(pk=version_id)
    if version.introspect_attempts > MAX_INTROSPECT_ATTEMPTS:
        return bundle_version_finish_introspection(
            version=version,
            error=SandboxError(
                SANDBOX_CRASH,
                f"Introspection crashed {MAX_INTROSPECT_ATTEMPTS} times; the bundle was not loaded.",
                {"attempts": version.introspect_attempts - 1},
            ),
        )
    try:
        sandbox_settings = sandbox_settings_for(version.organization)
        result = sandbox_api.introspect_metered(
            transformed_bundle_for(version),
            limits=INTROSPECT_LIMITS,
            env=sandbox_settings.env,
            backend=sandbox_settings.backend,
            # Read only to place a load error in the upload when it carried an inline source map.
            upload=lambda: storage_read(name=version.original_file.name or ""),
        )
    except SandboxError as exc:
        # Evaluating the bundle's top-level code is the uploading organization's CPU, failed or not.
        quota_meter_sandbox_cpu(organization=version.organization, cpu_ms=int(exc.usage.get("cpu_ms") or 0))
        return bundle_version_finish_introspection(version=version, error=exc)
    quota_meter_sandbox_cpu(organization=version.organization, cpu_ms=int(result.usage.get("cpu_ms") or 0))
    return bundle_version_finish_introspection(version=version, manifest=result.manifest)


@transaction.atomic
def bundle_version_finish_introspection(
    *,
    version: BundleVersion,
    manifest: dict[str, Any] | None = None,
    error: SandboxError | None = None,
) -> BundleVersion:
    """Record introspection's outcome if the version is still validating; activate it when asked to."""
    fields: dict[str, Any]
    if manifest is not None:
        status, fields = VersionStatus.READY, {"manifest": manifest, "error_type": "", "error_message": ""}
    else:
        assert error is not None
        detail = dict(error.detail or {})
        line, column = detail.get("line"), detail.get("column")
        status, fields = (
            VersionStatus.REJECTED,
            {
                "error_type": error.code,
                "error_message": error.message[:2000],
                "error_detail": detail or None,
                "error_line": line if isinstance(line, int) and line >= 0 else None,
                "error_column": column if isinstance(column, int) and column >= 0 else None,
            },
        )
    updated = BundleVersion.objects.filter(pk=version.pk, status=VersionStatus.VALIDATING).update(
        status=status, validated_at=timezone.now(), **fields
    )
    version.refresh_from_db()
    if not updated:
        return version
    system = Actor.system("introspection")
    audit_record(
        actor=system,
        action=f"bundle.version_{status}",
        organization=version.organization,
        target=version,
        metadata={
            "bundle": version.bundle.slug,
            "number": version.number,
            "error_type": version.error_type or None,
        },
    )
    if status == VersionStatus.READY and version.activate_when_ready:
        bundle_version_make_active(version=version, actor=system, only_if_newer=True)
    return version


def bundle_versions_reap_stale(*, organization_id: int | None = None, now: Any = None) -> int:
    """Re-queue (after too many attempts: reject) versions whose introspection crashed or was never queued."""
    now = now or timezone.now()
    stale = Q(introspect_started_at__lt=now - INTROSPECT_STALE_AFTER) | Q(
        introspect_started_at__isnull=True, created_at__lt=now - INTROSPECT_UNCLAIMED_AFTER
    )
    versions = BundleVersion.objects.filter(
        stale, status=VersionStatus.VALIDATING, bundle__deleted_at__isnull=True
    )
    if organization_id is not None:
        versions = versions.filter(organization_id=organization_id)
    count = 0
    for version in versions.select_related("bundle", "organization")[:100]:
        if version.introspect_attempts >= MAX_INTROSPECT_ATTEMPTS:
            bundle_version_finish_introspection(
                version=version,
                error=SandboxError(
                    TIMEOUT,
                    "Introspection did not finish; the worker running it stopped or exceeded its time limit.",
                    {"attempts": version.introspect_attempts},
                ),
            )
        else:
            # A fresh task claims it again (the claim only needs `validating`); should the original still be
            # alive, whichever finishes first is recorded. Restarting the clock spaces out re-queues.
            BundleVersion.objects.filter(pk=version.pk, status=VersionStatus.VALIDATING).update(
                introspect_started_at=now
            )
            version_introspection_enqueue(version)
        count += 1
    return count
