"""`manage.py org`: operator commands for organizations (create, list, apikey; more plug in here)."""

from __future__ import annotations

import json
from argparse import Namespace
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from lightfast_cloud.api_errors import ApiError
from organizations.models import Organization
from organizations.selectors import organization_get_by_ref, organization_list
from organizations.services import Actor, apikey_create, org_create, user_get_or_create_by_email

OPERATOR = Actor.operator(label="operator:cli")


def _organization(ref: str) -> Organization:
    organization = organization_get_by_ref(ref=ref)
    if organization is None:
        raise CommandError(f"no organization with slug or id {ref!r}")
    return organization


class Command(BaseCommand):
    help = "Manage organizations: create, list, apikey."

    def add_arguments(self, parser: CommandParser) -> None:
        """One subparser per subcommand, each naming its `handle_<name>` method as `handler`."""
        subcommands = parser.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")

        create = subcommands.add_parser("create", help="Create an organization owned by EMAIL.")
        create.add_argument("slug")
        create.add_argument("--owner", required=True, metavar="EMAIL", help="Created if missing.")
        create.add_argument("--name", default="", help="Display name (default: the slug).")
        create.set_defaults(handler=self.handle_create)

        listing = subcommands.add_parser("list", help="One organization per line, slug first.")
        listing.set_defaults(handler=self.handle_list)

        apikey = subcommands.add_parser("apikey", help="Create an API key, printed once on the last line.")
        apikey.add_argument("slug")
        apikey.add_argument("--scopes", required=True, help="Comma-separated: read,write,execute.")
        apikey.add_argument("--name", default="", help="A label for the key.")
        apikey.add_argument("--expires-in-days", type=int, default=None, help="Default: never expires.")
        apikey.set_defaults(handler=self.handle_apikey)

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the subcommand; service errors become a one-line CommandError."""
        try:
            options["handler"](Namespace(**options))
        except ApiError as exc:
            detail = f" ({json.dumps(exc.extra_detail)})" if exc.extra_detail else ""
            raise CommandError(f"{exc.message}{detail}") from exc

    def handle_create(self, options: Namespace) -> None:
        """Create the owner if needed, then the organization."""
        # One transaction: a failed create leaves no half-made owner behind.
        with transaction.atomic():
            owner, created = user_get_or_create_by_email(email=options.owner)
            organization = org_create(slug=options.slug, name=options.name, owner=owner, actor=OPERATOR)
        if created:
            self.stdout.write(
                f"created user {owner.get_username()} (no password yet: "
                f"manage.py changepassword {owner.get_username()})"
            )
        else:
            self.stdout.write(f"using existing user {owner.get_username()}")
        self.stdout.write(
            f"created organization {organization.slug} ({organization.public_id}) "
            f"owned by {owner.get_username()}"
        )

    def handle_list(self, options: Namespace) -> None:
        """Slug, public id, state, member count and name, tab-separated."""
        for organization in organization_list():
            state = "active" if organization.is_active else "suspended"
            members = organization.member_count  # type: ignore[attr-defined]  # annotated by the selector
            self.stdout.write(
                f"{organization.slug}\t{organization.public_id}\t{state}\tmembers={members}\t{organization.name}"
            )

    def handle_apikey(self, options: Namespace) -> None:
        """Create the key and print it last, alone on its line, so scripts can take the last line."""
        organization = _organization(options.slug)
        if options.expires_in_days is not None and options.expires_in_days < 1:
            raise CommandError("--expires-in-days must be at least 1")
        expires_at = (
            timezone.now() + timedelta(days=options.expires_in_days) if options.expires_in_days else None
        )
        api_key, raw_key = apikey_create(
            organization=organization,
            name=options.name,
            scopes=options.scopes.split(","),
            expires_at=expires_at,
            actor=OPERATOR,
        )
        expiry = f", expires {api_key.expires_at:%Y-%m-%d %H:%M} UTC" if api_key.expires_at else ""
        self.stdout.write(
            f"created API key {api_key.lookup_id} for {organization.slug} "
            f"(scopes: {','.join(api_key.scopes)}{expiry}); it is shown only once:"
        )
        self.stdout.write(raw_key)
