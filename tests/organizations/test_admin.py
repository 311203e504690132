"""The operator admin: pages load, plan limits are editable, keys are revocable and never shown."""

from __future__ import annotations

import pytest
from django.urls import reverse

from organizations.models import ApiKey, AuditLog, Membership, Organization

SETTINGS_INLINES = ("variables", "egress_hosts", "allowed_origins", "model_provider")


@pytest.fixture
def operator(admin_user, client):
    client.force_login(admin_user)
    return client


def test_admin_pages_load_and_never_show_secrets(operator, alice):
    api_key = alice.api_keys["all"]
    audit = AuditLog.objects.filter(organization=alice.organization).first()
    pages = [
        reverse("admin:organizations_organization_changelist"),
        reverse("admin:organizations_organization_add"),
        reverse("admin:organizations_organization_change", args=[alice.organization.pk]),
        reverse("admin:organizations_apikey_changelist"),
        reverse("admin:organizations_apikey_change", args=[api_key.pk]),
        reverse("admin:organizations_auditlog_changelist"),
        reverse("admin:organizations_auditlog_change", args=[audit.pk]),
    ]
    for page in pages:
        response = operator.get(page)
        assert response.status_code == 200, page
        text = response.content.decode()
        for key in alice.api_keys.values():
            assert key.hashed_key not in text and key.raw_key not in text
    change = operator.get(pages[2]).content.decode()
    assert 'name="max_bundle_bytes"' in change and 'name="memberships-0-role"' in change


def test_api_keys_and_audit_log_cannot_be_added_or_deleted(operator, alice):
    assert operator.get(reverse("admin:organizations_apikey_add")).status_code == 403
    assert operator.get(reverse("admin:organizations_auditlog_add")).status_code == 403
    entry = AuditLog.objects.first()
    assert (
        operator.post(
            reverse("admin:organizations_auditlog_delete", args=[entry.pk]), {"post": "yes"}
        ).status_code
        == 403
    )
    assert AuditLog.objects.filter(pk=entry.pk).exists()
    change = operator.get(reverse("admin:organizations_auditlog_change", args=[entry.pk])).content.decode()
    assert 'name="action"' not in change


def test_revoke_action(operator, alice, bob, api):
    targets = [alice.api_keys["read"], bob.api_keys["write"]]
    response = operator.post(
        reverse("admin:organizations_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [k.pk for k in targets]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Revoked 2 API key(s)." in response.content.decode()
    for api_key in targets:
        assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None
        assert api.get("/api/v1/organization", key=api_key.raw_key).status_code == 401
        entry = AuditLog.objects.get(action="apikey.revoked", target_id=api_key.lookup_id)
        assert entry.actor_type == "operator" and entry.actor_label == "operator:admin"
    assert api.get("/api/v1/organization", key=alice.keys["all"]).status_code == 200


def test_plan_limits_are_editable_and_audited(operator, alice):
    organization = alice.organization
    viewers = Membership.objects.filter(organization=organization, role="viewer")
    data = _change_form(
        organization,
        roles={membership.pk: "admin" for membership in viewers},
        api_rate="50/m",
        max_bundle_bytes=1024,
    )
    response = operator.post(reverse("admin:organizations_organization_change", args=[organization.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    organization.refresh_from_db()
    assert organization.api_rate == "50/m" and organization.max_bundle_bytes == 1024
    entry = AuditLog.objects.get(action="organization.limits_changed")
    assert entry.metadata["before"] == {"api_rate": "600/m", "max_bundle_bytes": 10 * 1024 * 1024}
    assert entry.metadata["after"] == {"api_rate": "50/m", "max_bundle_bytes": 1024}
    assert AuditLog.objects.get(action="member.role_changed").metadata["user"] == "alice-viewer@example.com"


def test_invalid_rate_is_refused(operator, alice):
    organization = alice.organization
    data = {
        "slug": organization.slug,
        "name": organization.name,
        **{name: getattr(organization, name) for name in Organization.LIMIT_FIELDS},
        "api_rate": "lots",
        "memberships-TOTAL_FORMS": 0,
        "memberships-INITIAL_FORMS": 0,
    }
    response = operator.post(reverse("admin:organizations_organization_change", args=[organization.pk]), data)
    assert response.status_code == 200  # form redisplayed with the error
    organization.refresh_from_db()
    assert organization.api_rate == "600/m"


def _change_form(organization, *, roles=None, delete=(), **fields):
    """The organization change form as the admin posts it, with `roles` and `delete` for memberships."""
    memberships = list(Membership.objects.filter(organization=organization).order_by("pk"))
    data = {
        "slug": organization.slug,
        "name": organization.name,
        "sandbox_backend": organization.sandbox_backend,
        **{name: getattr(organization, name) for name in Organization.LIMIT_FIELDS},
        **fields,
        "memberships-TOTAL_FORMS": len(memberships),
        "memberships-INITIAL_FORMS": len(memberships),
        "memberships-MIN_NUM_FORMS": 0,
        "memberships-MAX_NUM_FORMS": 1000,
        **{f"{prefix}-{part}": 0 for prefix in SETTINGS_INLINES for part in ("TOTAL_FORMS", "INITIAL_FORMS")},
    }
    for index, membership in enumerate(memberships):
        data.update(
            {
                f"memberships-{index}-id": membership.pk,
                f"memberships-{index}-organization": organization.pk,
                f"memberships-{index}-user": membership.user_id,
                f"memberships-{index}-role": (roles or {}).get(membership.pk, membership.role),
            }
        )
        if membership.pk in delete:
            data[f"memberships-{index}-DELETE"] = "on"
    return data


def test_the_admin_cannot_demote_or_remove_the_last_owner(operator, alice):
    organization = alice.organization
    owner = Membership.objects.get(organization=organization, role="owner")
    url = reverse("admin:organizations_organization_change", args=[organization.pk])
    for data in (
        _change_form(organization, roles={owner.pk: "admin"}),
        _change_form(organization, delete={owner.pk}),
    ):
        response = operator.post(url, data)
        assert response.status_code == 200  # the form again, with the error
        assert "An organization must keep at least one owner." in response.content.decode()
        owner.refresh_from_db()
        assert owner.role == "owner"
    assert not AuditLog.objects.filter(action__in=["member.role_changed", "member.removed"]).exists()


def test_the_admin_hands_ownership_over_in_one_submit_through_the_services(operator, alice):
    organization = alice.organization
    owner = Membership.objects.get(organization=organization, role="owner")
    admin_member = Membership.objects.get(organization=organization, role="admin")
    data = _change_form(organization, roles={owner.pk: "admin", admin_member.pk: "owner"})
    response = operator.post(reverse("admin:organizations_organization_change", args=[organization.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    owner.refresh_from_db()
    admin_member.refresh_from_db()
    assert (owner.role, admin_member.role) == ("admin", "owner")
    changes = AuditLog.objects.filter(action="member.role_changed").order_by("pk")
    assert [(entry.metadata["before"], entry.metadata["after"]) for entry in changes] == [
        ("admin", "owner"),
        ("owner", "admin"),
    ]


def test_the_admin_applies_the_platform_maximums_to_per_run_limits(operator, alice, settings):
    organization = alice.organization
    settings.LIGHTFAST_MAX_RUN_WALL_MS = 60_000
    data = _change_form(organization, run_wall_ms=60_001)
    response = operator.post(reverse("admin:organizations_organization_change", args=[organization.pk]), data)
    assert response.status_code == 200
    assert "must not exceed the platform maximums" in response.content.decode()
    organization.refresh_from_db()
    assert organization.run_wall_ms != 60_001
    assert not AuditLog.objects.filter(action="organization.limits_changed").exists()


def test_the_admin_changes_the_sandbox_backend_through_its_service(operator, alice):
    organization = alice.organization
    data = _change_form(organization, sandbox_backend="local")
    response = operator.post(reverse("admin:organizations_organization_change", args=[organization.pk]), data)
    assert response.status_code == 302, response.content.decode()[:3000]
    organization.refresh_from_db()
    assert organization.sandbox_backend == "local"
    entry = AuditLog.objects.get(action="organization.sandbox_backend_changed")
    assert entry.metadata == {"before": "", "after": "local"}


def test_allowed_origins_are_added_in_the_admin_through_the_service(operator, alice):
    organization = alice.organization
    data = _change_form(organization)
    data.update({"allowed_origins-TOTAL_FORMS": 2, "allowed_origins-0-origin": "HTTPS://App.Example.com/"})
    data["allowed_origins-1-origin"] = "http://not-local.example"
    url = reverse("admin:organizations_organization_change", args=[organization.pk])
    refused = operator.post(url, data)
    assert refused.status_code == 200 and b"Only localhost may use http" in refused.content
    data["allowed_origins-1-origin"] = "http://localhost:5173"
    assert operator.post(url, data).status_code == 302
    assert sorted(organization.allowed_origins.values_list("origin", flat=True)) == [
        "http://localhost:5173",
        "https://app.example.com",
    ]
    assert AuditLog.objects.filter(organization=organization, action="allowed_origin.added").count() == 2
