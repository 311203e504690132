"""factory_boy factories for tenancy objects; API keys go through the real service so they authenticate."""

from __future__ import annotations

import functools
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from factory.django import DjangoModelFactory

from organizations.models import ApiKey, Membership, Organization, Role
from organizations.services import Actor, apikey_create

TEST_PASSWORD = "correct horse battery staple"


@functools.cache
def _test_password_hash() -> str:
    return make_password(TEST_PASSWORD)


class UserFactory(DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")
    # Hashed once: PBKDF2 per user would dominate the suite's run time.
    password = factory.LazyFunction(lambda: _test_password_hash())


class OrganizationFactory(DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.LazyAttribute(lambda o: f"{o.slug.title()} Ltd")


class MembershipFactory(DjangoModelFactory):
    class Meta:
        model = Membership

    organization = factory.SubFactory(OrganizationFactory)
    user = factory.SubFactory(UserFactory)
    role = Role.MEMBER


class ApiKeyFactory(factory.Factory):
    """Builds keys with `apikey_create`; the returned ApiKey carries the full key as `raw_key`."""

    class Meta:
        model = ApiKey

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"key {n}")
    scopes = factory.LazyFunction(lambda: ["read", "write", "execute"])
    expires_at = None

    @classmethod
    def _create(cls, model_class: type[ApiKey], **kwargs: Any) -> ApiKey:
        api_key, raw_key = apikey_create(actor=Actor.system("tests"), **kwargs)
        api_key.raw_key = raw_key  # type: ignore[attr-defined]
        return api_key
