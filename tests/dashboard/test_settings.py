"""`/settings/`: each change goes through its service, refusals show next to the field, secrets never show."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from organizations.models import (
    ApiKey,
    AuditLog,
    EgressAllowedHost,
    Invitation,
    Membership,
    ModelProviderConfig,
    OrganizationVariable,
    Role,
)
from organizations.services import apikey_authenticate

pytestmark = pytest.mark.django_db


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_new_api_key_is_shown_once_and_works(alice: Any) -> None:
    client = signed_in(alice.owner)
    page = client.get("/settings/")
    assert b'<label for="id_apikey-name">Key name</label>' in page.content
    created = client.post(
        "/settings/api-keys/",
        {"apikey-name": "ci", "apikey-scopes": ["read", "execute"], "apikey-expires_in_days": "30"},
    )
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    raw_key = created.context["created_key_secret"]
    assert raw_key.encode() in created.content
    api_key = apikey_authenticate(raw_key=raw_key)
    assert (api_key.name, api_key.scopes, api_key.organization) == (
        "ci",
        ["read", "execute"],
        alice.organization,
    )
    assert api_key.expires_at is not None and api_key.created_by == alice.owner
    assert raw_key.encode() not in client.get("/settings/").content
    revoked = client.post(f"/settings/api-keys/{api_key.lookup_id}/revoke/")
    assert revoked.status_code == 302 and revoked["Location"] == "/settings/#api-keys"
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
    assert AuditLog.objects.filter(action="apikey.revoked", actor_label=alice.owner.get_username()).exists()


def test_api_key_errors_show_next_to_their_fields(alice: Any) -> None:
    client = signed_in(alice.users[Role.MEMBER])
    # Members cannot write settings at all.
    assert (
        client.post("/settings/api-keys/", {"apikey-name": "x", "apikey-scopes": ["read"]}).status_code == 403
    )
    client = signed_in(alice.users[Role.ADMIN])
    missing = client.post("/settings/api-keys/", {"apikey-name": "", "apikey-expires_in_days": "0"})
    form = missing.context["apikey_form"]
    assert missing.status_code == 200 and set(form.errors) == {"name", "scopes", "expires_in_days"}
    assert b'id="id_apikey-name_error"' in missing.content
    assert not ApiKey.objects.filter(organization=alice.organization, name="").exists()


def test_roles_change_within_what_the_changer_may_grant(alice: Any) -> None:
    member = Membership.objects.get(organization=alice.organization, role=Role.MEMBER)
    owner = Membership.objects.get(organization=alice.organization, role=Role.OWNER)
    admin = signed_in(alice.users[Role.ADMIN])
    assert (
        admin.post(f"/settings/members/{member.pk}/role/", {f"member-{member.pk}-role": "viewer"}).status_code
        == 302
    )
    member.refresh_from_db()
    assert member.role == Role.VIEWER
    denied = admin.post(
        f"/settings/members/{member.pk}/role/", {f"member-{member.pk}-role": "owner"}, follow=True
    )
    assert b"Only owners" in denied.content
    admin.post(f"/settings/members/{owner.pk}/remove/")
    assert Membership.objects.filter(pk=owner.pk).exists()
    # The last owner cannot demote themselves away (the service's rule), shown as a message.
    other_owner_client = signed_in(alice.owner)
    other_owner_client.post(f"/settings/members/{member.pk}/role/", {f"member-{member.pk}-role": "owner"})
    member.refresh_from_db()
    assert member.role == Role.OWNER
    removed = other_owner_client.post(f"/settings/members/{member.pk}/remove/")
    assert removed.status_code == 302 and not Membership.objects.filter(pk=member.pk).exists()


def test_invitation_links_are_shown_once_and_revocable(alice: Any) -> None:
    client = signed_in(alice.owner)
    created = client.post("/settings/invitations/", {"invitation-role": "member", "invitation-email": ""})
    link = created.context["created_invitation_link"]
    assert link.startswith("http://testserver/accounts/invite/") and link.encode() in created.content
    invitation = Invitation.objects.get(organization=alice.organization)
    assert link.encode() not in client.get("/settings/").content
    client.post(f"/settings/invitations/{invitation.pk}/revoke/")
    invitation.refresh_from_db()
    assert invitation.status == "revoked"
    assert Client().get(link.removeprefix("http://testserver")).status_code == 404


def test_egress_hosts_and_origins_are_validated_by_their_services(alice: Any, bob: Any) -> None:
    client = signed_in(alice.owner)
    bad = client.post("/settings/egress/", {"egress-pattern": "http://not a host"})
    assert bad.status_code == 200 and bad.context["egress_form"].errors["pattern"]
    assert client.post("/settings/egress/", {"egress-pattern": "API.Example.com"}).status_code == 302
    host = EgressAllowedHost.objects.get(organization=alice.organization)
    assert host.pattern == "api.example.com"
    assert signed_in(bob.owner).post(f"/settings/egress/{host.pk}/remove/").status_code == 404
    assert client.post(f"/settings/egress/{host.pk}/remove/").status_code == 302
    assert not EgressAllowedHost.objects.exists()
    plain = client.post("/settings/origins/", {"origin-origin": "http://app.example.com"})
    assert plain.status_code == 200 and "https" in plain.context["origin_form"].errors["origin"][0]
    assert client.post("/settings/origins/", {"origin-origin": "https://app.example.com"}).status_code == 302


def test_secrets_are_write_only(alice: Any) -> None:
    client = signed_in(alice.owner)
    saved = client.post(
        "/settings/variables/",
        {
            "variable-key": "WEATHER_TOKEN",
            "variable-value": "s3cr3t-value",
            "variable-is_secret": "on",
            "variable-inject_header": "Authorization",
            "variable-inject_prefix": "Bearer ",
            "variable-inject_hosts": "api.weather.example",
        },
    )
    assert saved.status_code == 302
    variable = OrganizationVariable.objects.get(organization=alice.organization, key="WEATHER_TOKEN")
    assert variable.is_secret and variable.value == "" and variable.secret_token
    page = client.get("/settings/").content
    assert b"WEATHER_TOKEN" in page and b"s3cr3t-value" not in page and b"write-only" in page
    # Keeping the value (empty) to the same hosts works; sending it to a new host needs it again.
    keep = {
        "variable-key": "WEATHER_TOKEN",
        "variable-is_secret": "on",
        "variable-inject_header": "Authorization",
        "variable-inject_hosts": "api.weather.example, evil.example",
    }
    refused = client.post("/settings/variables/", keep)
    assert refused.status_code == 200 and refused.context["variable_form"].errors["value"]
    assert b"s3cr3t-value" not in refused.content
    plain = client.post("/settings/variables/", {"variable-key": "REGION", "variable-value": "eu"})
    assert plain.status_code == 302 and b"eu</code>" in client.get("/settings/").content
    assert client.post("/settings/variables/WEATHER_TOKEN/delete/").status_code == 302
    assert list(OrganizationVariable.objects.values_list("key", flat=True)) == ["REGION"]


def test_the_model_provider_key_is_write_only(alice: Any) -> None:
    client = signed_in(alice.owner)
    bad = client.post(
        "/settings/model-provider/", {"provider-base_url": "ftp://x", "provider-model_map": "{}"}
    )
    assert bad.status_code == 200 and bad.context["provider_form"].errors["base_url"]
    saved = client.post(
        "/settings/model-provider/",
        {
            "provider-base_url": "https://models.example.com/v1",
            "provider-api_key": "sk-provider-secret",
            "provider-model_map": '{"openai/gpt-4o-mini": "small"}',
        },
    )
    assert saved.status_code == 302
    config = ModelProviderConfig.objects.get(organization=alice.organization)
    assert config.has_api_key and config.model_map == {"openai/gpt-4o-mini": "small"}
    page = client.get("/settings/").content
    assert b"sk-provider-secret" not in page and b"stored (write-only)" in page
    assert client.post("/settings/model-provider/clear/").status_code == 302
    assert not ModelProviderConfig.objects.exists()


def test_renaming_the_organization(alice: Any) -> None:
    client = signed_in(alice.owner)
    assert client.post("/settings/organization/", {"profile-name": "Alice & Co"}).status_code == 302
    alice.organization.refresh_from_db()
    assert alice.organization.name == "Alice & Co"
