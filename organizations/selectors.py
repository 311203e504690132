"""Shared reads of tenancy data."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet

from organizations.encryption import SecretUnreadable, secret_decrypt
from organizations.host_patterns import ca_file_for_tests, loopback_allowed_for_tests
from organizations.models import (
    AllowedOrigin,
    ApiKey,
    AuditLog,
    EgressAllowedHost,
    Invitation,
    Membership,
    ModelProviderConfig,
    Organization,
    OrganizationVariable,
    api_key_hash,
)

logger = logging.getLogger("organizations.selectors")


def organization_list() -> QuerySet[Organization]:
    """Every organization by slug, with its member count."""
    return Organization.objects.annotate(member_count=Count("memberships")).order_by("slug")


def organization_get_by_ref(*, ref: str) -> Organization | None:
    """The organization whose slug or public id is `ref`."""
    return Organization.objects.filter(Q(slug=ref) | Q(public_id=ref)).first()


def membership_for_user(*, user: User, organization_ref: str | None) -> Membership | None:
    """The user's membership in the named organization (slug or public id), or their only one if unnamed.

    None when the user is not a member of that organization, or belongs to
    several and did not name one.
    """
    memberships = Membership.objects.select_related("organization").filter(user=user)
    if organization_ref:
        memberships = memberships.filter(
            Q(organization__slug=organization_ref) | Q(organization__public_id=organization_ref)
        )
    found = list(memberships[:2])
    return found[0] if len(found) == 1 else None


def membership_count_for_user(*, user: User) -> int:
    """How many organizations the user belongs to."""
    return Membership.objects.filter(user=user).count()


def membership_list(*, organization: Organization) -> QuerySet[Membership]:
    """The organization's members, oldest first."""
    return Membership.objects.select_related("user").filter(organization=organization)


def invitation_for_token(*, token: str) -> Invitation | None:
    """The invitation of a link's token (any status), or None."""
    if not token or len(token) > 200:
        return None
    return Invitation.objects.select_related("organization").filter(token_hash=api_key_hash(token)).first()


def invitation_list(*, organization: Organization) -> QuerySet[Invitation]:
    """The organization's invitations, newest first (used, revoked and expired ones included)."""
    return Invitation.objects.select_related("created_by", "accepted_by").filter(organization=organization)


def apikey_list(*, organization: Organization) -> QuerySet[ApiKey]:
    """The organization's API keys, newest first, revoked and expired ones included."""
    return ApiKey.objects.select_related("created_by").filter(organization=organization)


def audit_log_list(*, organization: Organization) -> QuerySet[AuditLog]:
    """The organization's audit log, newest first."""
    return AuditLog.objects.filter(organization=organization)


def variable_list(*, organization: Organization) -> QuerySet[OrganizationVariable]:
    """The organization's variables and secrets by key."""
    return OrganizationVariable.objects.filter(organization=organization).order_by("key")


def allowed_origin_list(*, organization: Organization) -> QuerySet[AllowedOrigin]:
    """The organization's allowed browser origins."""
    return AllowedOrigin.objects.filter(organization=organization).order_by("origin")


# Every request from a browser asks which organizations allow its origin, so the whole table
# (small: at most MAX_ALLOWED_ORIGINS per organization) is read once per ORIGINS_TTL_S per process;
# the services forget it on commit, other processes see a change within ORIGINS_TTL_S.
ORIGINS_TTL_S = 5.0
_origins_lock = threading.Lock()
_origins: tuple[float, dict[str, frozenset[int]]] | None = None


def allowed_origins_forget() -> None:
    """Drop this process's copy of the origins table (after a change)."""
    global _origins
    with _origins_lock:
        _origins = None


def organizations_allowing_origin(origin: str) -> frozenset[int]:
    """The ids of the active organizations that allow `origin` (canonical form)."""
    global _origins
    now = time.monotonic()
    with _origins_lock:
        cached = _origins
    if cached is None or now - cached[0] > ORIGINS_TTL_S:
        table: dict[str, set[int]] = {}
        rows = AllowedOrigin.objects.filter(organization__is_active=True).values_list(
            "origin", "organization_id"
        )
        for value, organization_id in rows:
            table.setdefault(value, set()).add(organization_id)
        cached = (now, {key: frozenset(ids) for key, ids in table.items()})
        with _origins_lock:
            _origins = cached
    return cached[1].get(origin, frozenset())


def egress_host_list(*, organization: Organization) -> QuerySet[EgressAllowedHost]:
    """The organization's allowed hosts by pattern."""
    return EgressAllowedHost.objects.filter(organization=organization).order_by("pattern")


@dataclass(frozen=True)
class OrganizationSandboxConfig:
    """What the organization configured for its sandbox calls, secrets decrypted (host side only)."""

    env: dict[str, str] = field(default_factory=dict)
    allow_hosts: list[str] = field(default_factory=list)
    # host pattern (optionally `:port`) -> {header name: header value}; never given to the sandbox.
    secret_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # The secrets' values without prefixes, for scrubbing them from what fetch returns to JS.
    secret_values: tuple[str, ...] = ()
    backend: str = "local"
    # Only the test suite turns this on (organizations.host_patterns); production never does.
    allow_loopback_for_tests: bool = False
    ca_file_for_tests: str = ""


def sandbox_config_for(organization: Organization) -> OrganizationSandboxConfig:
    """Environment, allow list, secret headers and backend of the organization's sandbox calls."""
    env: dict[str, str] = {}
    secret_headers: dict[str, dict[str, str]] = {}
    secret_values: list[str] = []
    for variable in variable_list(organization=organization):
        if not variable.is_secret:
            env[variable.key] = variable.value
            continue
        try:
            value = secret_decrypt(variable.secret_token)
        except SecretUnreadable:
            # Leaving the header out makes the remote API refuse the call, which the bundle
            # author sees; sending a wrong value or failing every call would hide the cause.
            logger.error("secret %s of %s cannot be decrypted; not injected", variable.key, organization.slug)
            continue
        secret_values.append(value)
        for pattern in variable.inject_hosts or []:
            secret_headers.setdefault(pattern, {})[variable.inject_header] = variable.inject_prefix + value
    return OrganizationSandboxConfig(
        env=env,
        allow_hosts=list(egress_host_list(organization=organization).values_list("pattern", flat=True)),
        secret_headers=secret_headers,
        secret_values=tuple(secret_values),
        backend=organization.sandbox_backend or settings.LIGHTFAST_SANDBOX_BACKEND,
        allow_loopback_for_tests=loopback_allowed_for_tests(),
        ca_file_for_tests=ca_file_for_tests(),
    )


@dataclass(frozen=True)
class OrganizationModelProvider:
    """The organization's own provider settings, API key decrypted (host side only)."""

    base_url: str
    api_key: str
    model_map: dict[str, str]


def model_provider_for(organization: Organization) -> OrganizationModelProvider | None:
    """The organization's provider override, or None when it uses the platform's provider unchanged."""
    config = ModelProviderConfig.objects.filter(organization=organization).first()
    if config is None or not (config.base_url or config.model_map):
        return None
    api_key = ""
    if config.api_key_token:
        try:
            api_key = secret_decrypt(config.api_key_token)
        except SecretUnreadable:
            # The provider answers 401 and the run fails with that clear error.
            logger.error("model provider key of %s cannot be decrypted", organization.slug)
    return OrganizationModelProvider(
        base_url=config.base_url, api_key=api_key, model_map=dict(config.model_map or {})
    )
