"""Every tenant endpoint: 401 without credentials, and Bob can never reach Alice's objects (404)."""

from __future__ import annotations

import pytest

from organizations.models import ApiKey
from organizations.tenancy import (
    SAFE_PATH_METHODS,
    OrganizationScopedAPIView,
    OrganizationScopedGenericAPIView,
)
from tests.factories import UserFactory

COLLECTION_ENDPOINTS = [
    ("GET", "/api/v1/organization"),
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("GET", "/api/v1/members"),
]
OBJECT_ENDPOINTS = [("GET", "/api/v1/api-keys/{key_id}"), ("DELETE", "/api/v1/api-keys/{key_id}")]
ALL_ENDPOINTS = COLLECTION_ENDPOINTS + OBJECT_ENDPOINTS


def _path(template: str, alice) -> str:
    return template.format(key_id=alice.api_keys["read"].lookup_id)


@pytest.mark.parametrize(("method", "template"), ALL_ENDPOINTS)
def test_without_credentials_is_401_json(api, alice, method, template):
    response = api.request(method, _path(template, alice), json_body={"scopes": ["read"]})
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["error"]["type"] == "not_authenticated"


@pytest.mark.parametrize(("method", "template"), ALL_ENDPOINTS)
def test_garbage_bearer_token_is_401(api, alice, method, template):
    for token in ["nope", "lf_live_", "lf_live_short_x", "lf_live_" + "a" * 12 + "_wrong", "Bearer"]:
        response = api.request(method, _path(template, alice), key=token, json_body={"scopes": ["read"]})
        assert response.status_code == 401, token
        assert response.json()["error"]["type"] == "authentication_failed"


@pytest.mark.parametrize(("method", "template"), OBJECT_ENDPOINTS)
def test_bobs_key_gets_404_for_alices_key(api, alice, bob, method, template):
    response = api.request(method, _path(template, alice), key=bob.keys["all"])
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
    assert ApiKey.objects.get(pk=alice.api_keys["read"].pk).revoked_at is None


@pytest.mark.parametrize(("method", "template"), OBJECT_ENDPOINTS)
def test_bobs_owner_gets_404_for_alices_key(api, alice, bob, method, template):
    response = api.request(method, _path(template, alice), user=bob.owner)
    assert response.status_code == 404
    assert ApiKey.objects.get(pk=alice.api_keys["read"].pk).revoked_at is None


@pytest.mark.parametrize(("method", "template"), ALL_ENDPOINTS)
def test_bobs_owner_naming_alices_org_gets_404(api, alice, bob, method, template):
    for ref in [alice.organization.slug, alice.organization.public_id, "no-such-org"]:
        response = api.request(
            method,
            _path(template, alice),
            user=bob.owner,
            headers={"X-Organization": ref},
            json_body={"scopes": ["read"]},
        )
        assert response.status_code == 404, ref
        assert response.json()["error"]["type"] == "not_found"
    assert ApiKey.objects.filter(organization=alice.organization).count() == 4


@pytest.mark.parametrize(("method", "template"), ALL_ENDPOINTS)
def test_user_without_membership_gets_404(api, alice, method, template):
    outsider = UserFactory(username="charlie@example.com")
    response = api.request(method, _path(template, alice), user=outsider, json_body={"scopes": ["read"]})
    assert response.status_code == 404


def test_key_is_bound_to_its_organization_whatever_the_header_says(api, alice, bob):
    response = api.get("/api/v1/organization", key=bob.keys["read"], headers={"X-Organization": "alice"})
    assert response.status_code == 200
    assert response.json()["slug"] == "bob"


def test_bobs_key_lists_only_bobs_keys_and_members(api, alice, bob):
    keys = api.get("/api/v1/api-keys", key=bob.keys["read"]).json()["results"]
    assert {key["id"] for key in keys} == {key.lookup_id for key in bob.api_keys.values()}
    members = api.get("/api/v1/members", key=bob.keys["read"]).json()["results"]
    assert {member["username"] for member in members} == {user.username for user in bob.users.values()}


def test_bob_creating_a_key_creates_it_in_bobs_org(api, alice, bob):
    response = api.post("/api/v1/api-keys", {"name": "ci", "scopes": ["read"]}, key=bob.keys["all"])
    assert response.status_code == 201
    assert ApiKey.objects.get(lookup_id=response.json()["id"]).organization == bob.organization
    assert ApiKey.objects.filter(organization=alice.organization).count() == 4


def test_organization_endpoint_describes_org_and_caller(api, alice):
    body = api.get("/api/v1/organization", key=alice.keys["read"]).json()
    assert body["id"] == alice.organization.public_id and body["id"].startswith("org_")
    assert body["slug"] == "alice"
    assert body["limits"]["max_bundle_bytes"] == 10 * 1024 * 1024
    assert body["limits"]["api_rate"] == "600/m"
    assert body["caller"] == {
        "type": "api_key",
        "scopes": ["read"],
        "api_key_id": alice.api_keys["read"].lookup_id,
        "role": None,
    }
    body = api.get("/api/v1/organization", user=alice.users["viewer"]).json()
    assert body["caller"] == {"type": "user", "scopes": ["read"], "api_key_id": None, "role": "viewer"}


def test_member_of_two_orgs_must_name_one(api, alice, bob):
    from organizations.models import Membership

    Membership.objects.create(organization=bob.organization, user=alice.owner, role="viewer")
    response = api.get("/api/v1/organization", user=alice.owner)
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "organization_required"
    assert (
        api.get("/api/v1/organization", user=alice.owner, headers={"X-Organization": "bob"}).json()["caller"][
            "role"
        ]
        == "viewer"
    )
    assert (
        api.get(
            "/api/v1/organization", user=alice.owner, headers={"X-Organization": alice.organization.public_id}
        ).json()["caller"]["role"]
        == "owner"
    )


@pytest.mark.parametrize(("method", "template"), ALL_ENDPOINTS)
def test_suspended_organization_is_refused(api, alice, method, template):
    alice.organization.is_active = False
    alice.organization.save()
    response = api.request(
        method, _path(template, alice), key=alice.keys["all"], json_body={"scopes": ["read"]}
    )
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "organization_suspended"
    response = api.request(method, _path(template, alice), user=alice.owner, json_body={"scopes": ["read"]})
    assert response.status_code == 403


@pytest.mark.urls("tests.organizations.scoped_views_urls")
def test_generic_tenant_views_only_see_their_organization(api, alice, bob):
    listed = api.get("/api/v1/test-keys", key=bob.keys["read"]).json()
    assert {row["lookup_id"] for row in listed} == {key.lookup_id for key in bob.api_keys.values()}
    alice_key = alice.api_keys["read"].lookup_id
    assert api.get(f"/api/v1/test-keys/{alice_key}", key=bob.keys["read"]).status_code == 404
    assert api.get(f"/api/v1/test-keys/{alice_key}", key=alice.keys["read"]).status_code == 200


def test_a_tenant_view_that_overrides_its_safe_querysets_is_refused_at_class_creation():
    for name in sorted(SAFE_PATH_METHODS):
        with pytest.raises(TypeError, match=name):
            type("Leaky", (OrganizationScopedGenericAPIView,), {"__module__": __name__, name: print})
    with pytest.raises(TypeError, match="get_queryset"):

        class AllKeys(OrganizationScopedAPIView):
            def get_queryset(self):
                return ApiKey.objects.all()

    # Filtering the scoped queryset and the named escape hatch stay open.
    class Filtered(OrganizationScopedGenericAPIView):
        queryset = ApiKey.objects.all()

        def filter_queryset(self, queryset):
            return queryset.filter(revoked_at__isnull=True)

        def every_key(self):
            return self.unscoped_queryset(ApiKey, reason="operator report across organizations")

    assert Filtered().every_key().model is ApiKey
