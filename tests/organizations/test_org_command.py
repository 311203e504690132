"""`manage.py org`: create, list, apikey."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from organizations.models import ApiKey, AuditLog, Membership, Organization


def org(*args: str) -> list[str]:
    out = StringIO()
    call_command("org", *args, stdout=out)
    return out.getvalue().splitlines()


@pytest.mark.django_db
def test_create_makes_owner_and_org_and_says_so():
    lines = org("create", "acme", "--owner", "Ceo@Acme.example", "--name", "Acme Inc")
    organization = Organization.objects.get(slug="acme")
    assert organization.name == "Acme Inc" and organization.public_id.startswith("org_")
    user = get_user_model().objects.get(email="Ceo@acme.example")
    assert not user.has_usable_password()
    assert Membership.objects.get(organization=organization).role == "owner"
    assert lines[0].startswith("created user Ceo@acme.example")
    assert lines[-1] == f"created organization acme ({organization.public_id}) owned by Ceo@acme.example"
    assert list(
        AuditLog.objects.filter(organization=organization).values_list("action", "actor_type").order_by("pk")
    ) == [("organization.created", "operator"), ("member.added", "operator")]


@pytest.mark.django_db
def test_create_with_existing_user_reuses_it(alice):
    lines = org("create", "second", "--owner", "alice@example.com")
    assert lines[0] == "using existing user alice@example.com"
    assert Membership.objects.filter(user=alice.owner).count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("slug", ["Bad Slug", "-x", "UPPER", "a_b"])
def test_create_rejects_bad_slug_and_leaves_nothing(slug):
    with pytest.raises(CommandError):
        org("create", slug, "--owner", "new@example.com")
    assert not get_user_model().objects.filter(username="new@example.com").exists()
    assert not Organization.objects.exists()


@pytest.mark.django_db
def test_create_refuses_duplicate_slug(alice):
    with pytest.raises(CommandError, match="already exists"):
        org("create", "alice", "--owner", "someone@example.com")
    assert not get_user_model().objects.filter(username="someone@example.com").exists()


@pytest.mark.django_db
def test_list_is_one_org_per_line_slug_first(alice, bob):
    Organization.objects.filter(slug="bob").update(is_active=False)
    lines = org("list")
    assert [line.split("\t")[0] for line in lines] == ["alice", "bob"]
    assert lines[0].split("\t")[1:4] == [alice.organization.public_id, "active", "members=4"]
    assert lines[1].split("\t")[2] == "suspended"


@pytest.mark.django_db
def test_apikey_prints_key_alone_on_last_line_and_it_authenticates(alice, api):
    lines = org("apikey", "alice", "--scopes", "read,execute", "--name", "ci", "--expires-in-days", "30")
    raw_key = lines[-1]
    assert raw_key.startswith("lf_live_") and " " not in raw_key
    api_key = ApiKey.objects.get(lookup_id=raw_key.split("_")[2])
    assert api_key.scopes == ["read", "execute"] and api_key.name == "ci" and api_key.expires_at is not None
    response = api.get("/api/v1/organization", key=raw_key)
    assert response.status_code == 200
    assert response.json()["caller"]["scopes"] == ["read", "execute"]
    assert raw_key not in "\n".join(lines[:-1])


@pytest.mark.django_db
def test_apikey_accepts_public_id_and_rejects_bad_input(alice):
    assert org("apikey", alice.organization.public_id, "--scopes", "read")[-1].startswith("lf_live_")
    before = ApiKey.objects.count()
    with pytest.raises(CommandError, match="no organization"):
        org("apikey", "nobody", "--scopes", "read")
    with pytest.raises(CommandError, match="Scopes"):
        org("apikey", "alice", "--scopes", "read,admin")
    with pytest.raises(CommandError):
        org("apikey", "alice", "--scopes", "read", "--expires-in-days", "0")
    assert ApiKey.objects.count() == before
