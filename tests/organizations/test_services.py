"""Tenancy services: audit log on every write, owner rules, limits validation, immutable audit entries."""

from __future__ import annotations

import pytest

from organizations.errors import LastOwner, OrganizationSlugTaken, TenancyError
from organizations.models import AuditLog, AuditLogEntryImmutable, Membership, Organization
from organizations.services import (
    Actor,
    membership_add,
    membership_change_role,
    membership_remove,
    org_create,
    org_update_limits,
)
from tests.factories import UserFactory

OPERATOR = Actor.operator(label="operator:test")


@pytest.mark.django_db
def test_org_create_gives_random_public_ids_and_refuses_taken_slugs():
    owner = UserFactory()
    first = org_create(slug="one", name="One", owner=owner, actor=OPERATOR)
    second = org_create(slug="two", name="", owner=owner, actor=OPERATOR)
    assert first.public_id != second.public_id
    assert len(first.public_id) == 20 and first.public_id.startswith("org_")
    assert second.name == "two"
    with pytest.raises(OrganizationSlugTaken):
        org_create(slug="one", name="Again", owner=owner, actor=OPERATOR)
    assert Organization.objects.count() == 2


def test_membership_changes_are_audited_and_the_last_owner_stays(alice):
    newcomer = UserFactory(username="dave@example.com")
    membership = membership_add(organization=alice.organization, user=newcomer, role="viewer", actor=OPERATOR)
    with pytest.raises(TenancyError):
        membership_add(organization=alice.organization, user=newcomer, role="viewer", actor=OPERATOR)
    membership_change_role(membership=membership, role="admin", actor=OPERATOR)
    membership_remove(membership=membership, actor=OPERATOR)
    actions = list(
        AuditLog.objects.filter(target_type="membership", metadata__user="dave@example.com")
        .order_by("pk")
        .values_list("action", flat=True)
    )
    assert actions == ["member.added", "member.role_changed", "member.removed"]

    owner = Membership.objects.get(organization=alice.organization, role="owner")
    with pytest.raises(LastOwner):
        membership_change_role(membership=owner, role="admin", actor=OPERATOR)
    with pytest.raises(LastOwner):
        membership_remove(membership=owner, actor=OPERATOR)
    second_owner = Membership.objects.get(organization=alice.organization, role="admin")
    membership_change_role(membership=second_owner, role="owner", actor=OPERATOR)
    membership_remove(membership=owner, actor=OPERATOR)
    assert not Membership.objects.filter(pk=owner.pk).exists()


def test_limits_are_validated_and_audited(alice):
    organization = alice.organization
    org_update_limits(
        organization=organization,
        changes={"concurrent_runs": 3, "api_rate": "10/s"},
        actor=OPERATOR,
        reason="trial plan",
    )
    organization.refresh_from_db()
    assert organization.concurrent_runs == 3 and organization.api_rate == "10/s"
    entry = AuditLog.objects.get(action="organization.limits_changed")
    assert entry.reason == "trial plan"
    assert entry.metadata == {
        "before": {"concurrent_runs": 10, "api_rate": "600/m"},
        "after": {"concurrent_runs": 3, "api_rate": "10/s"},
    }
    for bad in [{"api_rate": "fast"}, {"slug": "x"}, {"concurrent_runs": -1}]:
        with pytest.raises(TenancyError):
            org_update_limits(
                organization=Organization.objects.get(pk=organization.pk), changes=bad, actor=OPERATOR
            )
    organization.refresh_from_db()
    assert organization.concurrent_runs == 3 and organization.slug == "alice"


def test_audit_entries_cannot_be_changed_or_deleted(alice):
    entry = AuditLog.objects.filter(organization=alice.organization).first()
    entry.reason = "rewritten"
    with pytest.raises(AuditLogEntryImmutable):
        entry.save()
    with pytest.raises(AuditLogEntryImmutable):
        entry.delete()
    assert AuditLog.objects.get(pk=entry.pk).reason == ""
