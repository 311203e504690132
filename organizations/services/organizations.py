"""Writes to organizations and users: creating an organization with its owner, its plan limits, its
sandbox backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.errors import OrganizationSlugTaken, SettingInvalid, TenancyError
from organizations.models import (
    Organization,
    Role,
    SandboxBackend,
)
from organizations.services.audit import Actor, audit_record
from organizations.services.memberships import membership_add


def user_get_or_create_by_email(*, email: str) -> tuple[User, bool]:
    """The user with this email (also their username), created without a usable password if missing."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email.strip())
    user = user_model.objects.filter(models.Q(email__iexact=email) | models.Q(username__iexact=email)).first()
    if user is not None:
        return user, False
    user = user_model(username=email, email=email)
    user.set_unusable_password()
    user.save()
    return user, True


@transaction.atomic
def org_create(*, slug: str, name: str, owner: User, actor: Actor) -> Organization:
    """Create an organization with `owner` as its first owner."""
    organization = Organization(slug=slug, name=name or slug)
    try:
        organization.full_clean()
    except DjangoValidationError as exc:
        if "slug" in exc.message_dict and Organization.objects.filter(slug=slug).exists():
            raise OrganizationSlugTaken(f"An organization with slug {slug!r} already exists.") from exc
        raise TenancyError("Invalid organization.", detail=exc.message_dict) from exc
    try:
        with transaction.atomic():
            organization.save()
    except IntegrityError as exc:  # a concurrent create won the race for the slug
        raise OrganizationSlugTaken(f"An organization with slug {slug!r} already exists.") from exc
    audit_record(
        actor=actor,
        action="organization.created",
        organization=organization,
        target=organization,
        metadata={"slug": slug, "name": organization.name},
    )
    membership_add(organization=organization, user=owner, role=Role.OWNER, actor=actor)
    return organization


@transaction.atomic
def org_update_limits(
    *, organization: Organization, changes: dict[str, Any], actor: Actor, reason: str = ""
) -> Organization:
    """Change plan limits; records old and new values."""
    unknown = set(changes) - set(Organization.LIMIT_FIELDS)
    if unknown:
        raise TenancyError(f"Unknown limits: {', '.join(sorted(unknown))}.")
    return _organization_change(
        organization=organization,
        changes=changes,
        actor=actor,
        action="organization.limits_changed",
        invalid="Invalid limits.",
        reason=reason,
    )


def _organization_change(
    *,
    organization: Organization,
    changes: dict[str, Any],
    actor: Actor,
    action: str,
    invalid: str,
    reason: str = "",
) -> Organization:
    """Apply validated field changes and record old and new values under `action`."""
    before = {name: getattr(organization, name) for name in changes}
    for name, value in changes.items():
        setattr(organization, name, value)
    try:
        organization.full_clean()
    except DjangoValidationError as exc:
        raise TenancyError(invalid, detail=exc.message_dict) from exc
    organization.save(update_fields=list(changes))
    audit_record(
        actor=actor,
        action=action,
        organization=organization,
        target=organization,
        reason=reason,
        metadata={"before": before, "after": {name: getattr(organization, name) for name in changes}},
    )
    return organization


@transaction.atomic
def organization_set_sandbox_backend(
    *, organization: Organization, backend: str, actor: Actor
) -> Organization:
    """Choose where the organization's JavaScript runs (`local`, `docker`, or "" for the platform default)."""
    if backend not in ("", *SandboxBackend.values):
        raise SettingInvalid(
            f"Unknown sandbox backend {backend!r}.", detail={"backends": ["", *SandboxBackend.values]}
        )
    before = organization.sandbox_backend
    organization.sandbox_backend = backend
    organization.save(update_fields=["sandbox_backend"])
    audit_record(
        actor=actor,
        action="organization.sandbox_backend_changed",
        organization=organization,
        target=organization,
        metadata={"before": before, "after": backend},
    )
    return organization


# What `org_update` may change; limits, the sandbox backend and suspension have their own services.
PROFILE_FIELDS = ("slug", "name")


@transaction.atomic
def org_update(*, organization: Organization, changes: dict[str, Any], actor: Actor) -> Organization:
    """Change the organization's slug or name; records old and new values."""
    unknown = set(changes) - set(PROFILE_FIELDS)
    if unknown:
        raise TenancyError(f"Not changeable here: {', '.join(sorted(unknown))}.")
    return _organization_change(
        organization=organization,
        changes=changes,
        actor=actor,
        action="organization.changed",
        invalid="Invalid organization fields.",
    )
