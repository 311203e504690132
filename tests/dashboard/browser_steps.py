"""Steps the dashboard's tests share: a member signed in without typing, a ready bundle made in the test
process where the live stack reads it, runs recorded with their events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.test import Client
from django.utils import timezone

from agents.models import BundleVersion
from execution.models import Run, RunEvent
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


def recorded_run(
    version: BundleVersion,
    *,
    status: str,
    events: list[tuple[str, dict[str, Any]]],
    created_at: datetime | None = None,
    error: tuple[str, str] | None = None,
    agent_key: str = "weather",
    **usage: Any,
) -> Run:
    """A run as a worker leaves it (status, error, usage, its events a second apart), without running it."""
    created = created_at or timezone.now()
    run = Run.objects.create(
        organization=version.organization,
        bundle_version=version,
        agent_key=agent_key,
        status=status,
        error_type=error[0] if error else "",
        error_message=error[1] if error else "",
        created_at=created,
        started_at=created,
        finished_at=created + timedelta(seconds=len(events)),
        last_seq=len(events),
        **usage,
    )
    RunEvent.objects.bulk_create(
        RunEvent(run=run, seq=seq, type=kind, payload=payload, created_at=created + timedelta(seconds=seq))
        for seq, (kind, payload) in enumerate(events, start=1)
    )
    return run


def tool_turn_events(city: str = "Paris") -> list[tuple[str, dict[str, Any]]]:
    """The events of a chat turn that called getWeather and answered in two text deltas."""
    call = {"toolCallId": "call_1"}
    return [
        ("start", {"messageId": "msg_1"}),
        ("start-step", {}),
        ("tool-input-available", {**call, "toolName": "getWeather", "input": {"city": city}}),
        ("data-log", {"data": {**call, "logs": [{"level": "log", "message": f"lookup {city}"}]}}),
        ("tool-output-available", {**call, "output": {"city": city, "temperature": 21}}),
        ("finish-step", {}),
        ("start-step", {}),
        ("text-start", {"id": "txt-1"}),
        ("text-delta", {"id": "txt-1", "delta": "It is 21 degrees "}),
        ("text-delta", {"id": "txt-1", "delta": f"in {city}."}),
        ("text-end", {"id": "txt-1"}),
        ("finish-step", {}),
        ("finish", {"finishReason": "stop"}),
        ("data-status", {"data": {"status": "succeeded"}, "transient": True}),
    ]
