"""The demo bundle the launcher installs for its demo organization, so the first chat works out of the box."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from django.contrib.auth.models import AbstractBaseUser, User

from agents.models import BundleVersion
from agents.services import bundle_upload, bundle_version_introspect
from organizations.models import Organization
from organizations.services import Actor

DEMO_BUNDLE_PATH = Path(__file__).with_name("demo-bundle.mjs")
DEMO_BUNDLE_SLUG = "demo"


def demo_bundle_source() -> bytes:
    """The demo bundle's bytes (ESM, the shape the Lightfast CLI emits)."""
    return DEMO_BUNDLE_PATH.read_bytes()


def demo_bundle_ensure(
    organization: Organization, user: AbstractBaseUser | None = None, *, introspect_now: bool = False
) -> BundleVersion:
    """Upload the demo bundle as `demo` unless these exact bytes are already there; idempotent.

    Introspection is queued for the Celery worker; `introspect_now` runs it in this process
    through the sandbox instead (for callers that start no worker).
    """
    actor = Actor.for_user(cast(User, user)) if user is not None else Actor.system("demo setup")
    result = bundle_upload(
        organization=organization,
        slug=DEMO_BUNDLE_SLUG,
        data=demo_bundle_source(),
        actor=actor,
        name="Demo assistant",
        description="Calculator, time zones, unit conversion and text statistics.",
    )
    version = result.version
    if introspect_now:
        version = bundle_version_introspect(version_id=version.pk, organization_id=organization.pk) or version
        version.refresh_from_db()
    return version
