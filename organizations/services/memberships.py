"""Writes to memberships: adding a member, changing a role, removing a member (an organization keeps
at least one owner)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.errors import LastOwner, TenancyError
from organizations.models import (
    Membership,
    Organization,
    Role,
)
from organizations.services.audit import Actor, audit_record


@transaction.atomic
def membership_add(*, organization: Organization, user: User, role: str, actor: Actor) -> Membership:
    """Add `user` to the organization with `role`."""
    if role not in Role.values:
        raise TenancyError(f"Unknown role {role!r}.", detail={"roles": list(Role.values)})
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise TenancyError(f"{user.get_username()} is already a member of {organization.slug}.")
    membership = Membership.objects.create(organization=organization, user=user, role=role)
    audit_record(
        actor=actor,
        action="member.added",
        organization=organization,
        target=membership,
        metadata={"user": user.get_username(), "role": role},
    )
    return membership


def _is_last_owner(membership: Membership) -> bool:
    if membership.role != Role.OWNER:
        return False
    owners = Membership.objects.select_for_update().filter(
        organization=membership.organization_id, role=Role.OWNER
    )
    return [row.pk for row in owners] == [membership.pk]


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: Actor) -> Membership:
    """Change a member's role; the last owner cannot be demoted."""
    if role not in Role.values:
        raise TenancyError(f"Unknown role {role!r}.", detail={"roles": list(Role.values)})
    if role != Role.OWNER and _is_last_owner(membership):
        raise LastOwner()
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor,
        action="member.role_changed",
        organization=membership.organization,
        target=membership,
        metadata={"user": membership.user.get_username(), "before": before, "after": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    """Remove a member; the last owner cannot be removed."""
    if _is_last_owner(membership):
        raise LastOwner()
    audit_record(
        actor=actor,
        action="member.removed",
        organization=membership.organization,
        target=membership,
        metadata={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()
