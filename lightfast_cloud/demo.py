"""Demo content for the embedded stack: an organization, its owner, an operator, an API key, a bundle."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from agents.demo import demo_bundle_ensure
from organizations.models import Organization
from organizations.services import Actor, apikey_create, org_create, user_get_or_create_by_email

DEMO_SLUG = "demo"
DEMO_OWNER_EMAIL = "demo@example.com"
OPERATOR_USERNAME = "admin"


def _operator_ensure() -> list[str]:
    """A superuser for the Django admin."""
    user_model = get_user_model()
    if user_model.objects.filter(username=OPERATOR_USERNAME).exists():
        return [
            f"Operator login (admin at /admin/): {OPERATOR_USERNAME} (password shown on first start; "
            f"reset: python manage.py changepassword {OPERATOR_USERNAME})"
        ]
    password = secrets.token_urlsafe(12)
    user_model.objects.create_superuser(username=OPERATOR_USERNAME, email="", password=password)
    return [f"Operator login (admin at /admin/): {OPERATOR_USERNAME} / {password}"]


@transaction.atomic
def demo_ensure() -> list[str]:
    """Create what is missing of the demo content; return the lines to show the person starting it."""
    lines = _operator_ensure()
    actor = Actor.system("launcher")
    organization = Organization.objects.filter(slug=DEMO_SLUG).first()
    owner: Any
    if organization is None:
        owner, _ = user_get_or_create_by_email(email=DEMO_OWNER_EMAIL)
        password = secrets.token_urlsafe(12)
        owner.set_password(password)
        owner.save(update_fields=["password"])
        organization = org_create(slug=DEMO_SLUG, name="Demo organization", owner=owner, actor=actor)
        _, raw_key = apikey_create(
            organization=organization,
            name="demo key",
            scopes=["read", "write", "execute"],
            actor=actor,
            created_by=owner,
        )
        lines += [
            f"Demo organization '{DEMO_SLUG}', owner login (dashboard at /): {DEMO_OWNER_EMAIL} / {password}",
            "Demo API key (shown once, keep it):",
            raw_key,
        ]
    else:
        membership = organization.memberships.filter(role="owner").select_related("user").first()
        owner = membership.user if membership is not None else None
        lines += [
            f"Demo organization '{DEMO_SLUG}' exists; owner login: {DEMO_OWNER_EMAIL}. "
            f"New API key: python manage.py org apikey {DEMO_SLUG} --scopes read,write,execute"
        ]
    version = demo_bundle_ensure(organization, owner)
    lines.append(f"Demo bundle '{version.bundle.slug}' version {version.number}: {version.status}")
    return lines
