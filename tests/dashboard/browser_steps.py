"""Steps the dashboard's browser tests share: a member signed in without typing, a ready bundle made in the
test process where the live stack reads it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.test import Client

from agents.models import BundleVersion
from organizations.models import Organization, Role
from tests.bundles import WEATHER, uploaded_version
from tests.dashboard.live import LiveStack
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def sign_in(page: Any, live: LiveStack, user: Any) -> None:
    """Give the page's browser context a session of `user` (Django's own login, as the login form does)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live.base_url}])


def member_of_new_organization(slug: str, *, role: str = Role.OWNER) -> tuple[Organization, Any]:
    """An organization and a member of it with `role`."""
    organization = OrganizationFactory(slug=slug, name=f"{slug.title()} Inc")
    user = UserFactory(username=f"{slug}@example.com")
    MembershipFactory(organization=organization, user=user, role=role)
    return organization, user


def ready_weather_bundle(live: LiveStack, organization: Organization, django_settings: Any) -> BundleVersion:
    """weather.mjs uploaded and introspected in the test process, stored where the live stack reads files."""
    django_settings.MEDIA_ROOT = str(live.media_root)
    return uploaded_version(organization, WEATHER)
