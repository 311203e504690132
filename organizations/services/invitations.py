"""Writes to invitations: a single-use link that adds whoever accepts it as a member with a role."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.errors import InvitationUnusable, RoleEscalation, TenancyError
from organizations.models import Invitation, Membership, Organization, Role, api_key_hash
from organizations.selectors import invitation_for_token
from organizations.services.audit import Actor, audit_record
from organizations.services.memberships import membership_add

INVITATION_VALID_FOR = timedelta(days=7)
# Roles a member may hand out, by their own role: only owners make owners.
GRANTABLE_ROLES: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset(Role.values),
    Role.ADMIN: frozenset({Role.ADMIN, Role.MEMBER, Role.VIEWER}),
}


def role_grantable_by(*, role: str, granter_role: str | None) -> bool:
    """Whether a member with `granter_role` may give `role` (operators, `None`, may give any)."""
    return granter_role is None or role in GRANTABLE_ROLES.get(granter_role, frozenset())


@transaction.atomic
def invitation_create(
    *,
    organization: Organization,
    role: str,
    actor: Actor,
    inviter_role: str | None,
    email: str = "",
    valid_for: timedelta = INVITATION_VALID_FOR,
) -> tuple[Invitation, str]:
    """Create an invitation; returns it with its token, which is never retrievable again."""
    if role not in Role.values:
        raise TenancyError(f"Unknown role {role!r}.", detail={"role": list(Role.values)})
    if not role_grantable_by(role=role, granter_role=inviter_role):
        raise RoleEscalation(detail={"role": role})
    token = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organization=organization,
        role=role,
        email=email.strip(),
        token_hash=api_key_hash(token),
        created_by=actor.user,
        expires_at=timezone.now() + valid_for,
    )
    audit_record(
        actor=actor,
        action="invitation.created",
        organization=organization,
        target=invitation,
        metadata={"role": role, "email": invitation.email, "expires_at": invitation.expires_at.isoformat()},
    )
    return invitation, token


@transaction.atomic
def invitation_accept(*, token: str, user: User) -> Membership:
    """Make `user` a member as the invitation says, once; raises InvitationUnusable when it cannot be used."""
    found = invitation_for_token(token=token)
    if found is None:
        raise InvitationUnusable()
    invitation = Invitation.objects.select_for_update().select_related("organization").get(pk=found.pk)
    if invitation.status != "pending":
        raise InvitationUnusable(f"This invitation was {invitation.status}.")
    if not invitation.organization.is_active:
        raise InvitationUnusable("This organization is suspended.")
    if invitation.email and invitation.email.lower() not in {user.email.lower(), user.get_username().lower()}:
        raise InvitationUnusable(f"This invitation is for {invitation.email}; sign in with that account.")
    if Membership.objects.filter(organization=invitation.organization, user=user).exists():
        raise InvitationUnusable(f"You are already a member of {invitation.organization.name}.")
    actor = Actor.for_user(user)
    membership = membership_add(
        organization=invitation.organization, user=user, role=invitation.role, actor=actor
    )
    Invitation.objects.filter(pk=invitation.pk).update(accepted_at=timezone.now(), accepted_by=user)
    audit_record(
        actor=actor,
        action="invitation.accepted",
        organization=invitation.organization,
        target=invitation,
        metadata={"user": user.get_username(), "role": invitation.role},
    )
    return membership


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: Actor) -> Invitation:
    """Revoke a pending invitation; revoking a used or revoked one changes nothing."""
    updated = Invitation.objects.filter(
        pk=invitation.pk, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    invitation.refresh_from_db(fields=["revoked_at"])
    if updated:
        audit_record(
            actor=actor,
            action="invitation.revoked",
            organization=invitation.organization,
            target=invitation,
            metadata={"role": invitation.role, "email": invitation.email},
        )
    return invitation
