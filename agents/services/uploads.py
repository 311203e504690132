"""Uploading a bundle: checks, the jailed transform, storage and the version row; introspection is
enqueued once the upload commits."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Max

from agents.errors import (
    BundleTooLarge,
    InvalidBundle,
    InvalidUpload,
    TransformUnavailable,
)
from agents.models import BUNDLE_SLUG_PATTERN, Bundle, BundleVersion
from agents.services.versions import bundle_not_found, version_introspection_enqueue
from agents.storage import (
    ORIGINAL_NAME,
    SCRIPT_NAME,
    SOURCE_MAP_NAME,
    storage_delete,
    storage_write,
    version_directory,
)
from execution.sandbox.errors import SANDBOX_CRASH, SandboxError
from execution.sandbox.transform import transform
from organizations.models import Organization
from organizations.quotas import quota_reserve_storage
from organizations.services import Actor, audit_record

logger = logging.getLogger("agents.services")

# esbuild on a 2 MB bundle takes well under a second; this bounds a pathological input.
TRANSFORM_TIMEOUT_S = 10.0


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
        raise bundle_not_found(slug)
    existing = _existing_identical(organization=organization, slug=slug, sha256=sha256)
    if existing is not None:
        return UploadResult(version=existing, created=False)
    try:
        transformed = transform(data, max_bytes=limit, timeout_s=TRANSFORM_TIMEOUT_S)
    except SandboxError as exc:
        if exc.code == SANDBOX_CRASH:
            raise TransformUnavailable() from exc
        raise InvalidBundle(exc.message, detail=exc.detail or None, code=exc.code) from exc

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
            transaction.on_commit(lambda: version_introspection_enqueue(version), robust=True)
    except BaseException:
        # The rows are rolled back; without this the files would be orphans nobody references.
        storage_delete(names=written)
        raise
    return result


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
            raise bundle_not_found(slug)
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
