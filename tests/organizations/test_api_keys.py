"""API keys over the REST API: shown once, hashed, scoped, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from organizations.errors import ApiKeyRejected
from organizations.models import ApiKey, AuditLog, Organization
from organizations.services import Actor, apikey_authenticate, apikey_mark_used
from tests.factories import ApiKeyFactory


def test_created_key_is_shown_once_and_works(api, alice):
    response = api.post(
        "/api/v1/api-keys", {"name": "deploy", "scopes": ["read", "execute"]}, user=alice.users["admin"]
    )
    assert response.status_code == 201
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    raw_key = body["key"]
    assert raw_key.startswith(f"lf_live_{body['id']}_")
    # The secret (URL-safe base64, which has "_" too) is all that follows the prefix.
    secret = raw_key.removeprefix(f"lf_live_{body['id']}_")
    assert len(secret) >= 40
    assert body["scopes"] == ["read", "execute"] and body["status"] == "active"
    assert body["created_by"] == alice.users["admin"].username

    assert api.get("/api/v1/organization", key=raw_key).json()["caller"]["api_key_id"] == body["id"]

    stored = ApiKey.objects.get(lookup_id=body["id"])
    assert raw_key not in str(stored.__dict__)  # only a hash is stored
    for path in [f"/api/v1/api-keys/{body['id']}", "/api/v1/api-keys"]:
        text = api.get(path, key=alice.keys["read"]).content.decode()
        assert raw_key not in text and secret not in text
        assert stored.hashed_key not in text
    assert "key" not in api.get(f"/api/v1/api-keys/{body['id']}", key=alice.keys["read"]).json()
    entry = AuditLog.objects.get(action="apikey.created", target_id=body["id"])
    assert entry.actor_label == alice.users["admin"].username and entry.organization == alice.organization


def test_revoked_key_gets_401(api, alice):
    victim = alice.api_keys["read"]
    response = api.delete(f"/api/v1/api-keys/{victim.lookup_id}", key=alice.keys["all"])
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    response = api.get("/api/v1/organization", key=victim.raw_key)
    assert response.status_code == 401
    assert response.json()["error"] == {
        "type": "authentication_failed",
        "message": "This API key has been revoked.",
        "detail": None,
    }
    # Revoking twice changes nothing and records nothing new.
    assert api.delete(f"/api/v1/api-keys/{victim.lookup_id}", key=alice.keys["all"]).status_code == 200
    assert AuditLog.objects.filter(action="apikey.revoked", target_id=victim.lookup_id).count() == 1


def test_key_can_revoke_itself(api, alice):
    own = alice.api_keys["write"]
    assert api.delete(f"/api/v1/api-keys/{own.lookup_id}", key=own.raw_key).status_code == 200
    assert api.get("/api/v1/api-keys", key=own.raw_key).status_code == 401


def test_expired_key_gets_401(api, alice):
    api_key = ApiKeyFactory(
        organization=alice.organization, scopes=["read"], expires_at=timezone.now() + timedelta(seconds=30)
    )
    assert api.get("/api/v1/organization", key=api_key.raw_key).status_code == 200
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api.get("/api/v1/organization", key=api_key.raw_key)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "This API key has expired."
    assert (
        api.get(f"/api/v1/api-keys/{api_key.lookup_id}", key=alice.keys["read"]).json()["status"] == "expired"
    )


def test_expires_in_days_sets_expiry(api, alice):
    body = api.post(
        "/api/v1/api-keys", {"scopes": ["read"], "expires_in_days": 7}, key=alice.keys["all"]
    ).json()
    expires_at = ApiKey.objects.get(lookup_id=body["id"]).expires_at
    assert timedelta(days=6, hours=23) < expires_at - timezone.now() <= timedelta(days=7)


@pytest.mark.parametrize("scope", ["read", "execute"])
def test_key_without_write_scope_gets_403_on_writes(api, alice, scope):
    before = ApiKey.objects.count()
    response = api.post("/api/v1/api-keys", {"scopes": ["read"]}, key=alice.keys[scope])
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_denied"
    assert "write" in response.json()["error"]["message"]
    response = api.delete(f"/api/v1/api-keys/{alice.api_keys['all'].lookup_id}", key=alice.keys[scope])
    assert response.status_code == 403
    assert ApiKey.objects.count() == before
    assert ApiKey.objects.get(pk=alice.api_keys["all"].pk).revoked_at is None


def test_write_only_key_cannot_read(api, alice):
    assert api.get("/api/v1/api-keys", key=alice.keys["write"]).status_code == 403


def test_key_cannot_create_a_key_with_more_scopes(api, alice):
    before = ApiKey.objects.count()
    response = api.post("/api/v1/api-keys", {"scopes": ["read", "execute"]}, key=alice.keys["write"])
    assert response.status_code == 403
    assert ApiKey.objects.count() == before


@pytest.mark.parametrize(
    ("role", "can_read", "can_manage"),
    [("owner", True, True), ("admin", True, True), ("member", True, False), ("viewer", True, False)],
)
def test_roles(api, alice, role, can_read, can_manage):
    user = alice.users[role]
    assert (api.get("/api/v1/members", user=user).status_code == 200) is can_read
    assert (api.get("/api/v1/api-keys", user=user).status_code == 200) is can_read
    response = api.post("/api/v1/api-keys", {"scopes": ["read"]}, user=user)
    assert response.status_code == (201 if can_manage else 403)


def test_session_writes_need_csrf(api, alice):
    response = api.post("/api/v1/api-keys", {"scopes": ["read"]}, user=alice.owner, enforce_csrf=True)
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]


def test_last_used_at_is_written_at_most_once_a_minute(alice):
    api_key = alice.api_keys["read"]
    first = apikey_authenticate(raw_key=api_key.raw_key).last_used_at
    assert first is not None
    assert apikey_authenticate(raw_key=api_key.raw_key).last_used_at == first
    # A stale in-memory copy cannot move it back or write again within the minute.
    stale = ApiKey.objects.get(pk=api_key.pk)
    stale.last_used_at = None
    apikey_mark_used(api_key=stale, now=first + timedelta(seconds=30))
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first
    later = first + timedelta(seconds=61)
    apikey_mark_used(api_key=ApiKey.objects.get(pk=api_key.pk), now=later)
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == later


def test_members_list(api, alice):
    members = api.get("/api/v1/members", key=alice.keys["read"]).json()["results"]
    assert {(m["username"], m["role"]) for m in members} == {
        ("alice@example.com", "owner"),
        ("alice-admin@example.com", "admin"),
        ("alice-member@example.com", "member"),
        ("alice-viewer@example.com", "viewer"),
    }


def test_api_key_actions_are_audited_with_the_key_as_actor(api, alice):
    key = alice.api_keys["all"]
    created = api.post("/api/v1/api-keys", {"scopes": ["read"]}, key=key.raw_key).json()
    api.delete(f"/api/v1/api-keys/{created['id']}", key=key.raw_key)
    entries = AuditLog.objects.filter(target_id=created["id"]).order_by("created_at", "pk")
    assert [(e.action, e.actor_type, e.actor_api_key_id) for e in entries] == [
        ("apikey.created", "api_key", key.pk),
        ("apikey.revoked", "api_key", key.pk),
    ]
    assert Actor.for_api_key(key).label == key.display_prefix


def test_authentication_loads_the_key_and_its_organization_as_the_orm_would(alice, django_assert_num_queries):
    api_key = alice.api_keys["read"]
    apikey_authenticate(raw_key=api_key.raw_key)  # last_used_at written: the next one only reads
    with django_assert_num_queries(1):
        loaded = apikey_authenticate(raw_key=api_key.raw_key)
        organization = loaded.organization
    expected = ApiKey.objects.select_related("organization").get(pk=api_key.pk)
    pairs = ((ApiKey, loaded, expected), (Organization, organization, expected.organization))
    for model, ours, theirs in pairs:
        assert ours.get_deferred_fields() == set()
        for field in model._meta.concrete_fields:
            assert getattr(ours, field.attname) == getattr(theirs, field.attname), field.name


@pytest.mark.parametrize("lookup", ["w5rjpyyc8t4\x00", "W5RJPYYC8T41", "w5rjpyyc8t4é", "w5rjpyyc8t'1"])
def test_a_lookup_id_outside_the_alphabet_is_refused_without_a_query(lookup, db, django_assert_num_queries):
    with django_assert_num_queries(0), pytest.raises(ApiKeyRejected):
        apikey_authenticate(raw_key=f"lf_live_{lookup}_secret")
