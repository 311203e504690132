"""A bundle version's lifecycle after upload: activation, rollback, quarantine, deletion, and the
introspection task it is queued for."""

from __future__ import annotations

from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from agents.errors import (
    VersionNotRunnable,
)
from agents.models import Bundle, BundleVersion, VersionStatus
from agents.storage import (
    storage_delete,
)
from organizations.services import Actor, audit_record

# Sent after a version was quarantined (with `version`, `actor`, `reason`), so the runs app can cancel
# the runs on it (execution/receivers.py).
bundle_version_quarantined = Signal()


def bundle_not_found(slug: str) -> Exception:
    """The refusal for a bundle (or `bundle@number`) the organization does not have."""
    from django.http import Http404

    return Http404(f"No bundle {slug!r} in this organization.")


def version_introspection_enqueue(version: BundleVersion) -> None:
    """Queue the version's introspection task."""
    from agents.tasks import introspect_bundle_version

    introspect_bundle_version.delay(version.pk, version.organization_id)


def bundle_version_make_active(
    *, version: BundleVersion, actor: Actor, only_if_newer: bool = False
) -> Bundle:
    """Point the bundle at `version` in the caller's transaction (`only_if_newer`: keep a newer one)."""
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
    return bundle_version_make_active(version=version, actor=actor)


@transaction.atomic
def bundle_rollback(*, bundle: Bundle, actor: Actor, to_number: int | None = None) -> Bundle:
    """Activate version `to_number`, or else the newest ready version older than the active one."""
    bundle = Bundle.objects.select_for_update().get(pk=bundle.pk)
    ready = bundle.versions.filter(status=VersionStatus.READY)
    if to_number is not None:
        target = bundle.versions.filter(number=to_number).first()
        if target is None:
            raise bundle_not_found(f"{bundle.slug}@{to_number}")
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
        transaction.on_commit(lambda: version_introspection_enqueue(version), robust=True)
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
