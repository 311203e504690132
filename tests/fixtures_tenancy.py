"""Tenancy fixtures: Alice's and Bob's organizations, and `api`, a client for the REST API.

Each organization has an owner, an admin, a member and a viewer, and one API
key per scope (plus one with every scope). Bob "should have no access to
Alice's stuff": every endpoint test checks that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from organizations.models import ApiKey, Organization, Role
from tests.factories import ApiKeyFactory, MembershipFactory, OrganizationFactory, UserFactory

_NO_BODY = object()


@dataclass
class TenantWorld:
    """One organization with a user per role and a key per scope (`keys["all"]` has every scope)."""

    organization: Organization
    users: dict[str, AbstractBaseUser]
    api_keys: dict[str, ApiKey] = field(default_factory=dict)

    @property
    def owner(self) -> AbstractBaseUser:
        return self.users[Role.OWNER]

    @property
    def keys(self) -> dict[str, str]:
        """Full keys by scope name."""
        return {name: api_key.raw_key for name, api_key in self.api_keys.items()}  # type: ignore[attr-defined]


def make_tenant_world(slug: str) -> TenantWorld:
    """An organization named `slug` with users alice@…, alice-admin@… and so on."""
    organization = OrganizationFactory(slug=slug, name=f"{slug.title()}'s org")
    users = {}
    for role in Role.values:
        username = f"{slug}@example.com" if role == Role.OWNER else f"{slug}-{role}@example.com"
        users[role] = MembershipFactory(
            organization=organization, user=UserFactory(username=username), role=role
        ).user
    world = TenantWorld(organization=organization, users=users)
    for name, scopes in {
        "read": ["read"],
        "write": ["write"],
        "execute": ["execute"],
        "all": ["read", "write", "execute"],
    }.items():
        world.api_keys[name] = ApiKeyFactory(organization=organization, name=f"{slug} {name}", scopes=scopes)
    return world


@pytest.fixture
def alice(db: None) -> TenantWorld:
    """Alice's organization."""
    return make_tenant_world("alice")


@pytest.fixture
def bob(db: None) -> TenantWorld:
    """Bob's organization, which must never see Alice's."""
    return make_tenant_world("bob")


class ApiCaller:
    """Calls the API as an API key, a signed-in user, or anonymously; JSON bodies by default."""

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        user: AbstractBaseUser | None = None,
        json_body: Any = _NO_BODY,
        body: bytes | str | None = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
        enforce_csrf: bool = False,
    ) -> Any:
        """One request; returns the test client's response (`.status_code`, `.json()`)."""
        client = Client(enforce_csrf_checks=enforce_csrf)
        if user is not None:
            client.force_login(user)
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        data: Any = None
        if json_body is not _NO_BODY:
            data = json.dumps(json_body)
        elif body is not None:
            data = body
        kwargs: dict[str, Any] = {"headers": all_headers}
        if data is not None:
            kwargs.update(data=data, content_type=content_type)
        return client.generic(method, path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = _NO_BODY, **kwargs: Any) -> Any:  # noqa: A002 - mirrors requests
        return self.request("POST", path, json_body=json, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)


@pytest.fixture
def api() -> ApiCaller:
    """A client for the REST API."""
    return ApiCaller()
