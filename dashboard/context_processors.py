"""What base.html needs on every page: the navigation, the current organization and the member's others."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.http import HttpRequest

from organizations.models import Membership, Organization

# The main navigation: label and path. A section is current when the request path starts with its path.
NAVIGATION: tuple[tuple[str, str], ...] = (
    ("Overview", "/"),
    ("Bundles", "/bundles/"),
    ("Chat", "/chat/"),
    ("Runs", "/runs/"),
    ("Usage", "/usage/"),
    ("Settings", "/settings/"),
)


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    current: bool


class DashboardChrome:
    """The page frame's data, read lazily: pages outside an organization (login, errors) query nothing."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request

    @cached_property
    def organization(self) -> Organization | None:
        """The current organization, on pages that resolved one (OrganizationPageMixin)."""
        tenant = getattr(self.request, "tenant", None)
        return tenant.organization if tenant is not None else None

    @cached_property
    def role(self) -> str:
        """The member's role in the current organization."""
        tenant = getattr(self.request, "tenant", None)
        membership = tenant.membership if tenant is not None else None
        return membership.role if membership is not None else ""

    @cached_property
    def memberships(self) -> list[Membership]:
        """Every organization the user belongs to, for the organization switcher."""
        if not self.request.user.is_authenticated:
            return []
        return list(
            Membership.objects.select_related("organization")
            .filter(user=self.request.user)
            .order_by("organization__name", "organization__slug")
        )

    @cached_property
    def navigation(self) -> list[NavItem]:
        """The main navigation with the current section marked."""
        path = self.request.path
        items = []
        for label, prefix in NAVIGATION:
            current = path == prefix if prefix == "/" else path.startswith(prefix)
            items.append(NavItem(label=label, path=prefix, current=current))
        return items


def dashboard(request: HttpRequest) -> dict[str, Any]:
    """`dashboard` in every template's context."""
    return {"dashboard": DashboardChrome(request)}
