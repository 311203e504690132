"""Shared reads of tenancy data."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet

from organizations.models import ApiKey, AuditLog, Membership, Organization


def organization_list() -> QuerySet[Organization]:
    """Every organization by slug, with its member count."""
    return Organization.objects.annotate(member_count=Count("memberships")).order_by("slug")


def organization_get_by_ref(*, ref: str) -> Organization | None:
    """The organization whose slug or public id is `ref`."""
    return Organization.objects.filter(Q(slug=ref) | Q(public_id=ref)).first()


def membership_for_user(*, user: User, organization_ref: str | None) -> Membership | None:
    """The user's membership in the named organization (slug or public id), or their only one if unnamed.

    None when the user is not a member of that organization, or belongs to
    several and did not name one.
    """
    memberships = Membership.objects.select_related("organization").filter(user=user)
    if organization_ref:
        memberships = memberships.filter(
            Q(organization__slug=organization_ref) | Q(organization__public_id=organization_ref)
        )
    found = list(memberships[:2])
    return found[0] if len(found) == 1 else None


def membership_count_for_user(*, user: User) -> int:
    """How many organizations the user belongs to."""
    return Membership.objects.filter(user=user).count()


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    """The organization's members, oldest first."""
    return Membership.objects.select_related("user").filter(organization=organization)


def apikey_list(*, organization: Organization) -> QuerySet[ApiKey]:
    """The organization's API keys, newest first, revoked and expired ones included."""
    return ApiKey.objects.select_related("created_by").filter(organization=organization)


def audit_log_list(*, organization: Organization) -> QuerySet[AuditLog]:
    """The organization's audit log, newest first."""
    return AuditLog.objects.filter(organization=organization)
