"""`manage.py org`: operator commands (create, list, apikey, set-limits, suspend, reactivate, usage)."""

from __future__ import annotations

import json
from argparse import Namespace
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from lightfast_cloud.errors import LightfastError
from organizations.models import Organization
from organizations.operations import org_reactivate, org_set_limits, org_suspend
from organizations.quotas import usage_report
from organizations.selectors import organization_get_by_ref, organization_list
from organizations.services import Actor, apikey_create, org_create, user_get_or_create_by_email

OPERATOR = Actor.operator(label="operator:cli")


def _organization(ref: str) -> Organization:
    organization = organization_get_by_ref(ref=ref)
    if organization is None:
        raise CommandError(f"no organization with slug or id {ref!r}")
    return organization


class Command(BaseCommand):
    help = "Manage organizations: create, list, apikey, set-limits, suspend, reactivate, usage."

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

        set_limits = subcommands.add_parser("set-limits", help="Change plan limits (only those given).")
        set_limits.add_argument("slug")
        for field in Organization.LIMIT_FIELDS:
            set_limits.add_argument(
                f"--{field.replace('_', '-')}",
                dest=field,
                type=str if field == "api_rate" else _non_negative_int,
                default=None,
                metavar="RATE" if field == "api_rate" else "N",
            )
        set_limits.add_argument("--reason", default="", help="Recorded in the audit log.")
        set_limits.set_defaults(handler=self.handle_set_limits)

        suspend = subcommands.add_parser("suspend", help="Refuse every API call and websocket; cancel runs.")
        suspend.add_argument("slug")
        suspend.add_argument("--reason", required=True, help="Recorded in the audit log.")
        suspend.set_defaults(handler=self.handle_suspend)

        reactivate = subcommands.add_parser("reactivate", help="Lift a suspension.")
        reactivate.add_argument("slug")
        reactivate.add_argument("--reason", default="", help="Recorded in the audit log.")
        reactivate.set_defaults(handler=self.handle_reactivate)

        usage = subcommands.add_parser("usage", help="Usage against every quota, as JSON.")
        usage.add_argument("slug")
        usage.set_defaults(handler=self.handle_usage)

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the subcommand; service errors become a one-line CommandError."""
        try:
            options["handler"](Namespace(**options))
        except LightfastError as exc:
            detail = f" ({json.dumps(exc.detail)})" if exc.detail else ""
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

    def handle_set_limits(self, options: Namespace) -> None:
        """Apply the given limits in one audited change and print the new limits as JSON."""
        organization = _organization(options.slug)
        changes = {
            field: getattr(options, field)
            for field in Organization.LIMIT_FIELDS
            if getattr(options, field) is not None
        }
        if not changes:
            raise CommandError("give at least one limit, e.g. --api-rate 600/m")
        organization = org_set_limits(
            organization=organization, changes=changes, actor=OPERATOR, reason=options.reason
        )
        self.stdout.write(json.dumps(organization.limits(), sort_keys=True))

    def handle_suspend(self, options: Namespace) -> None:
        """Suspend and report how many runs were cancelled."""
        organization = _organization(options.slug)
        cancelled = org_suspend(organization=organization, actor=OPERATOR, reason=options.reason)
        self.stdout.write(f"suspended {organization.slug}; cancelled {cancelled} run(s)")

    def handle_reactivate(self, options: Namespace) -> None:
        """Lift the suspension."""
        organization = org_reactivate(
            organization=_organization(options.slug), actor=OPERATOR, reason=options.reason
        )
        self.stdout.write(f"reactivated {organization.slug}")

    def handle_usage(self, options: Namespace) -> None:
        """The same report as GET /api/v1/usage."""
        self.stdout.write(json.dumps(usage_report(organization=_organization(options.slug)), indent=2))


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(value)
    return number
