"""Writes to bundles: upload, introspection results, activation, rollback, quarantine, deletion, tool calls.

Every write is recorded in the audit log through `organizations.services.audit_record`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.dispatch import Signal
from django.utils import timezone

from agents.errors import (
    AmbiguousTool,
    BundleTooLarge,
    InvalidBundle,
    InvalidUpload,
    TransformUnavailable,
    UnknownTool,
    VersionNotRunnable,
)
from agents.models import BUNDLE_SLUG_PATTERN, Bundle, BundleVersion, VersionStatus
from agents.selectors import (
    INTROSPECT_LIMITS,
    sandbox_settings_for,
    tool_limits_for,
    transformed_bundle_for,
    version_bundle_key,
)
from agents.storage import (
    ORIGINAL_NAME,
    SCRIPT_NAME,
    SOURCE_MAP_NAME,
    storage_delete,
    storage_read,
    storage_write,
    version_directory,
)
from execution.sandbox import api as sandbox_api
from execution.sandbox.errors import SANDBOX_CRASH, TIMEOUT, SandboxError
from execution.sandbox.transform import transform
from organizations.models import Organization
from organizations.quotas import quota_check_sandbox_cpu, quota_meter_sandbox_cpu, quota_reserve_storage
from organizations.services import Actor, audit_record

logger = logging.getLogger("agents.services")

# esbuild on a 2 MB bundle takes well under a second; this bounds a pathological input.
TRANSFORM_TIMEOUT_S = 10.0
# A claimed introspection that has not finished after this long crashed (the task's hard limit is lower).
INTROSPECT_STALE_AFTER = timedelta(seconds=150)
# A version never claimed after this long lost its task message (broker down at enqueue time).
INTROSPECT_UNCLAIMED_AFTER = timedelta(minutes=10)
MAX_INTROSPECT_ATTEMPTS = 3

# Sent after a version was quarantined (with `version`, `actor`, `reason`), so the runs app can cancel
# the runs on it (execution/receivers.py).
bundle_version_quarantined = Signal()


@dataclass(frozen=True)
class UploadResult:
    """The version an upload produced, and whether it is new (False: identical bytes were already there)."""

    version: BundleVersion
    created: bool


def _check_slug(slug: str) -> str:
    import re

    slug = (slug or "").strip()
    if not slug:
        raise InvalidUpload(
            "A bundle slug is required (field or query parameter `slug`).", detail={"field": "slug"}
        )
    if not re.match(BUNDLE_SLUG_PATTERN, slug):
        raise InvalidUpload(
            "Invalid bundle slug: use lowercase letters, digits and inner hyphens, at most 64 characters.",
            detail={"field": "slug", "value": slug[:100]},
        )
    return slug


def _decode_utf8(data: bytes) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidBundle("The bundle is not valid UTF-8 text.", detail={"byte_offset": exc.start}) from exc


def _existing_identical(*, organization: Organization, slug: str, sha256: str) -> BundleVersion | None:
    return (
        BundleVersion.objects.select_related("bundle")
        .filter(organization=organization, bundle__slug=slug, bundle__deleted_at__isnull=True, sha256=sha256)
        .first()
    )


def bundle_upload(
    *,
    organization: Organization,
    slug: str,
    data: bytes,
    actor: Actor,
    name: str = "",
    description: str = "",
    activate: bool = True,
    must_exist: bool = False,
) -> UploadResult:
    """Validate and store a new version of bundle `slug` (created unless `must_exist`); queue introspection.

    Identical bytes return the existing version. Raises InvalidUpload, BundleTooLarge, InvalidBundle
    (syntax_error / invalid_bundle with line and column), QuotaExceeded (bundle_storage_bytes).
    """
    slug = _check_slug(slug)
    limit = int(organization.max_bundle_bytes)
    if len(data) > limit:
        raise BundleTooLarge(limit=limit, size=len(data))
    if not data.strip():
        raise InvalidBundle("The bundle file is empty.", detail={"bytes": len(data)})
    _decode_utf8(data)
    sha256 = hashlib.sha256(data).hexdigest()
    if must_exist and not Bundle.objects.live().filter(organization=organization, slug=slug).exists():
        raise _bundle_not_found(slug)
    existing = _existing_identical(organization=organization, slug=slug, sha256=sha256)
    if existing is not None:
        return UploadResult(version=existing, created=False)
    try:
        transformed = transform(data, max_bytes=limit, timeout_s=TRANSFORM_TIMEOUT_S)
    except SandboxError as exc:
        if exc.code == SANDBOX_CRASH:
            raise TransformUnavailable() from exc
        raise InvalidBundle(exc.message, detail=exc.detail or None, error_type=exc.code) from exc

    written: list[str] = []
    try:
        with transaction.atomic():
            result = _create_version_row(
                organization=organization,
                slug=slug,
                sha256=sha256,
                size=len(data),
                actor=actor,
                name=name,
                description=description,
                activate=activate,
                must_exist=must_exist,
                imports=list(getattr(transformed, "imports", []) or []),
            )
            if not result.created:
                return result
            version = result.version
            directory = version_directory(
                organization_public_id=organization.public_id,
                bundle_id=version.bundle_id,
                number=version.number,
                sha256=sha256,
            )
            version.original_file.name = storage_write(path=f"{directory}/{ORIGINAL_NAME}", content=data)
            written.append(version.original_file.name)
            script = transformed.script
            version.script_file.name = storage_write(
                path=f"{directory}/{SCRIPT_NAME}",
                content=script.encode() if isinstance(script, str) else script,
            )
            written.append(version.script_file.name)
            if transformed.source_map:
                version.source_map_file.name = storage_write(
                    path=f"{directory}/{SOURCE_MAP_NAME}", content=json.dumps(transformed.source_map).encode()
                )
                written.append(version.source_map_file.name)
            version.save(update_fields=["original_file", "script_file", "source_map_file"])
            audit_record(
                actor=actor,
                action="bundle.version_uploaded",
                organization=organization,
                target=version,
                metadata={
                    "bundle": slug,
                    "number": version.number,
                    "sha256": sha256,
                    "bytes": len(data),
                    "activate": activate,
                },
            )
            transaction.on_commit(lambda: _enqueue_introspection(version), robust=True)
    except BaseException:
        # The rows are rolled back; without this the files would be orphans nobody references.
        storage_delete(names=written)
        raise
    return result


def _bundle_not_found(slug: str) -> Exception:
    from django.http import Http404

    return Http404(f"No bundle {slug!r} in this organization.")


def _create_version_row(
    *,
    organization: Organization,
    slug: str,
    sha256: str,
    size: int,
    actor: Actor,
    name: str,
    description: str,
    activate: bool,
    must_exist: bool,
    imports: list[str],
) -> UploadResult:
    """Insert the bundle (if new) and the version row; numbering is serialised by locking the bundle row."""
    bundle = Bundle.objects.live().select_for_update().filter(organization=organization, slug=slug).first()
    if bundle is None:
        if must_exist:
            raise _bundle_not_found(slug)
        try:
            with transaction.atomic():
                bundle = Bundle.objects.create(
                    organization=organization,
                    slug=slug,
                    name=name[:200] or slug,
                    description=description,
                    created_by=actor.user,
                )
        except IntegrityError:
            # A concurrent upload created it first.
            bundle = Bundle.objects.live().select_for_update().get(organization=organization, slug=slug)
        else:
            audit_record(
                actor=actor,
                action="bundle.created",
                organization=organization,
                target=bundle,
                metadata={"slug": slug},
            )
    identical = BundleVersion.objects.filter(bundle=bundle, sha256=sha256).first()
    if identical is not None:
        return UploadResult(version=identical, created=False)
    # Locks the organization's usage row until commit: uploads to its other bundles wait, so two
    # of them cannot both fit in the last free bytes.
    quota_reserve_storage(organization=organization, size=size)
    number = (bundle.versions.aggregate(top=Max("number"))["top"] or 0) + 1
    version = BundleVersion.objects.create(
        organization=organization,
        bundle=bundle,
        number=number,
        sha256=sha256,
        size_bytes=size,
        imports=imports,
        activate_when_ready=activate,
        uploaded_by=actor.user,
    )
    version.bundle = bundle
    return UploadResult(version=version, created=True)


def _enqueue_introspection(version: BundleVersion) -> None:
    from agents.tasks import introspect_bundle_version

    introspect_bundle_version.delay(version.pk, version.organization_id)


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
        _activate(version=version, actor=system, only_if_newer=True)
    return version


def _activate(*, version: BundleVersion, actor: Actor, only_if_newer: bool = False) -> Bundle:
    bundle = Bundle.objects.select_for_update().get(pk=version.bundle_id)
    if only_if_newer and bundle.active_version_id is not None:
        current = (
            BundleVersion.objects.filter(pk=bundle.active_version_id).values_list("number", flat=True).first()
        )
        if current is not None and current > version.number:
            # An older upload finished introspection after a newer one was activated.
            return bundle
    previous = bundle.active_version_id
    bundle.active_version = version
    bundle.save(update_fields=["active_version"])
    audit_record(
        actor=actor,
        action="bundle.version_activated",
        organization=bundle.organization,
        target=version,
        metadata={"bundle": bundle.slug, "number": version.number, "previous_version_id": previous},
    )
    return bundle


@transaction.atomic
def bundle_version_activate(*, version: BundleVersion, actor: Actor) -> Bundle:
    """Make a ready version the bundle's active one."""
    version = BundleVersion.objects.select_for_update().get(pk=version.pk)
    if version.status != VersionStatus.READY:
        raise VersionNotRunnable(
            f"Version {version.number} is {version.status}; only a ready version can be made active.",
            detail={"status": version.status},
        )
    return _activate(version=version, actor=actor)


@transaction.atomic
def bundle_rollback(*, bundle: Bundle, actor: Actor, to_number: int | None = None) -> Bundle:
    """Activate version `to_number`, or else the newest ready version older than the active one."""
    bundle = Bundle.objects.select_for_update().get(pk=bundle.pk)
    ready = bundle.versions.filter(status=VersionStatus.READY)
    if to_number is not None:
        target = bundle.versions.filter(number=to_number).first()
        if target is None:
            raise _bundle_not_found(f"{bundle.slug}@{to_number}")
    else:
        current = bundle.active_version.number if bundle.active_version else None
        older = ready.filter(number__lt=current) if current is not None else ready
        target = older.order_by("-number").first()
        if target is None:
            raise VersionNotRunnable("There is no earlier ready version to roll back to.")
    return bundle_version_activate(version=target, actor=actor)


@transaction.atomic
def bundle_version_quarantine(*, version: BundleVersion, actor: Actor, reason: str = "") -> BundleVersion:
    """Stop a version from running or becoming active; the bundle loses it as its active version."""
    version = BundleVersion.objects.select_for_update().select_related("bundle").get(pk=version.pk)
    if version.status == VersionStatus.QUARANTINED:
        return version
    before = version.status
    version.status = VersionStatus.QUARANTINED
    version.quarantined_at = timezone.now()
    version.quarantine_reason = reason
    version.save(update_fields=["status", "quarantined_at", "quarantine_reason"])
    was_active = Bundle.objects.filter(pk=version.bundle_id, active_version=version).update(
        active_version=None
    )
    audit_record(
        actor=actor,
        action="bundle.version_quarantined",
        organization=version.organization,
        target=version,
        reason=reason,
        metadata={
            "bundle": version.bundle.slug,
            "number": version.number,
            "status_before": before,
            "was_active": bool(was_active),
        },
    )
    transaction.on_commit(
        lambda: bundle_version_quarantined.send(
            sender=BundleVersion, version=version, actor=actor, reason=reason
        ),
        robust=True,
    )
    return version


@transaction.atomic
def bundle_version_unquarantine(*, version: BundleVersion, actor: Actor, reason: str = "") -> BundleVersion:
    """Release a version: ready again if introspected, else introspected anew; it is not re-activated."""
    version = BundleVersion.objects.select_for_update().select_related("bundle").get(pk=version.pk)
    if version.status != VersionStatus.QUARANTINED:
        return version
    if version.manifest is not None:
        version.status = VersionStatus.READY
    elif version.error_type:
        version.status = VersionStatus.REJECTED
    else:
        version.status = VersionStatus.VALIDATING
        version.introspect_attempts = 0
        version.introspect_started_at = None
        transaction.on_commit(lambda: _enqueue_introspection(version), robust=True)
    version.quarantined_at = None
    version.save(update_fields=["status", "quarantined_at", "introspect_attempts", "introspect_started_at"])
    audit_record(
        actor=actor,
        action="bundle.version_unquarantined",
        organization=version.organization,
        target=version,
        reason=reason,
        metadata={"bundle": version.bundle.slug, "number": version.number, "status": version.status},
    )
    return version


def bundle_delete(*, bundle: Bundle, actor: Actor) -> Bundle:
    """Delete a bundle: its files leave storage, its slug is free, its version rows stay as records."""
    with transaction.atomic():
        bundle = Bundle.objects.select_for_update().get(pk=bundle.pk)
        if bundle.deleted_at is not None:
            return bundle
        versions = list(bundle.versions.all())
        names = [
            name
            for version in versions
            for name in (version.original_file.name, version.script_file.name, version.source_map_file.name)
            if name
        ]
        now = timezone.now()
        bundle.deleted_at = now
        bundle.active_version = None
        bundle.save(update_fields=["deleted_at", "active_version"])
        bundle.versions.update(original_file="", script_file="", source_map_file="", files_deleted_at=now)
        # A version still validating would otherwise be introspected from files that are gone.
        bundle.versions.filter(status=VersionStatus.VALIDATING).update(
            status=VersionStatus.REJECTED, error_type="cancelled", error_message="The bundle was deleted."
        )
        audit_record(
            actor=actor,
            action="bundle.deleted",
            organization=bundle.organization,
            target=bundle,
            metadata={"slug": bundle.slug, "versions": len(versions), "files": len(names)},
        )
        # Files go only once the rows no longer point at them.
        transaction.on_commit(lambda: storage_delete(names=names))
    return bundle


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
            _enqueue_introspection(version)
        count += 1
    return count


def tool_invoke(
    *,
    organization: Organization,
    bundle: Bundle,
    tool: str,
    agent: str | None,
    input: Any,
    actor: Actor,
    timeout_ms: int | None = None,
) -> dict[str, Any]:
    """Run a tool of the active version in the sandbox; answers `{ok, output, error, logs, usage}`."""
    version = bundle.active_version
    if version is None:
        raise VersionNotRunnable(
            f"Bundle {bundle.slug!r} has no active version that is ready to run.",
            detail={"bundle": bundle.slug},
        )
    version = BundleVersion.objects.get(pk=version.pk)
    if not version.is_runnable:
        raise VersionNotRunnable(
            f"Version {version.number} of {bundle.slug!r} is {version.status} and cannot run.",
            detail={"bundle": bundle.slug, "number": version.number, "status": version.status},
        )
    agent_key = _agent_for_tool(version=version, tool=tool, agent=agent)
    quota_check_sandbox_cpu(organization=organization)
    settings_ = sandbox_settings_for(organization)
    limits = tool_limits_for(organization, timeout_ms=timeout_ms)
    context = {"sessionId": str(uuid.uuid4()), "resourceId": organization.public_id}
    result = sandbox_api.invoke(
        transformed_bundle_for(version),
        agent=agent_key,
        tool=tool,
        input=input,
        context=context,
        env=settings_.env,
        egress=settings_.egress,
        limits=limits,
        bundle_key=version_bundle_key(version),
        backend=settings_.backend,
    )
    answer = result.to_dict()
    usage = answer.get("usage") or {}
    cpu_ms = int(usage.get("cpu_ms", usage.get("cpuMs")) or 0)
    quota_meter_sandbox_cpu(organization=organization, cpu_ms=cpu_ms)
    error = answer.get("error") or {}
    audit_record(
        actor=actor,
        action="tool.invoked",
        organization=organization,
        target=version,
        metadata={
            "bundle": bundle.slug,
            "number": version.number,
            "agent": agent_key,
            "tool": tool,
            "ok": bool(answer.get("ok")),
            "error_type": error.get("type") if error else None,
        },
    )
    return answer


def _agent_for_tool(*, version: BundleVersion, tool: str, agent: str | None) -> str:
    agents: dict[str, Any] = (version.manifest or {}).get("agents") or {}
    if agent is not None:
        spec = agents.get(agent)
        if spec is None:
            raise UnknownTool(
                f"No agent {agent!r} in version {version.number}.",
                detail={"agent": agent, "agents": sorted(agents)},
            )
        if tool not in (spec.get("tools") or {}) and not spec.get("dynamicTools"):
            raise UnknownTool(
                f"Agent {agent!r} has no tool {tool!r}.",
                detail={"agent": agent, "tool": tool, "tools": sorted(spec.get("tools") or {})},
            )
        return agent
    owners = [key for key, spec in agents.items() if tool in (spec.get("tools") or {})]
    if not owners:
        raise UnknownTool(f"No agent of version {version.number} has a tool {tool!r}.", detail={"tool": tool})
    if len(owners) > 1:
        raise AmbiguousTool(
            f"Agents {', '.join(sorted(owners))} all have a tool {tool!r}; name one in `agent`.",
            detail={"agents": sorted(owners)},
        )
    return owners[0]
