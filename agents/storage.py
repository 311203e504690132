"""Where a bundle version's files live in Django storage, and how they are written and removed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.files.base import ContentFile
from django.core.files.storage import Storage, default_storage

logger = logging.getLogger("agents.storage")

ORIGINAL_NAME = "original.mjs"
SCRIPT_NAME = "script.js"
SOURCE_MAP_NAME = "script.js.map"


def version_directory(*, organization_public_id: str, bundle_id: int, number: int, sha256: str) -> str:
    """One directory per version, named so that no two versions of any organization can collide."""
    return f"bundles/{organization_public_id}/{bundle_id}/v{number}-{sha256[:16]}"


def storage_write(*, path: str, content: bytes, storage: Storage | None = None) -> str:
    """Write `content` at `path`; returns the name storage chose (it only differs after a leftover file)."""
    return (storage or default_storage).save(path, ContentFile(content))


def storage_read(*, name: str, storage: Storage | None = None) -> bytes:
    """The bytes of a stored file."""
    with (storage or default_storage).open(name, "rb") as handle:
        return bytes(handle.read())


def storage_delete(*, names: Iterable[str], storage: Storage | None = None) -> list[str]:
    """Delete files; returns names that could not be deleted (logged, not raised: the row is the truth)."""
    target = storage or default_storage
    failed: list[str] = []
    for name in names:
        if not name:
            continue
        try:
            target.delete(name)
        except OSError:
            logger.exception("could not delete bundle file %s", name)
            failed.append(name)
    return failed
