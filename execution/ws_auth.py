"""Who is on a websocket: single-use tickets, API keys in `Sec-WebSocket-Protocol`, dashboard sessions."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.cache import cache
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from execution.client_tokens import CLIENT_TOKEN_PREFIX, client_token_tenant
from lightfast_cloud.errors import CLOSE_AUTH, LightfastError
from organizations.cors import cors_origin_canonical
from organizations.errors import ApiKeyRejected
from organizations.models import ApiKey, Membership, Organization
from organizations.ratelimits import ratelimit_auth_blocked, ratelimit_auth_failure
from organizations.selectors import membership_for_user, organizations_allowing_origin
from organizations.services import apikey_authenticate
from organizations.tenancy import OrganizationSuspended, Tenant, tenant_of

# WsAuthFailed codes that mean "these credentials do not authenticate": they count against the IP.
CREDENTIAL_FAILURES = frozenset({"authentication_failed", "not_authenticated"})
TICKET_TTL_S = 30
TICKET_PREFIX = "lf_wst_"
SUBPROTOCOL = "lightfast.v1"
KEY_SUBPROTOCOL_PREFIX = "lightfast.key."


class WsAuthFailed(LightfastError):
    """The websocket presented no usable credentials; `code` is the error type sent before closing.

    Closes with 4401 whatever the code (a suspended organization or a session with no matching
    organization included): the client must authenticate again before anything else helps.
    """

    code = "authentication_failed"
    ws_close_override = CLOSE_AUTH


@dataclass(frozen=True)
class WsTicket:
    """A ticket as the API returns it."""

    ticket: str
    expires_at: datetime


def _ticket_cache_key(ticket: str) -> str:
    return cache.make_and_validate_key(f"wsticket:{ticket}")


def _redis() -> Any:
    # Django's cache API has no atomic get-and-delete; the raw client of the same redis has GETDEL.
    return cache._cache.get_client(write=True)  # type: ignore[attr-defined]


def ws_ticket_issue(*, tenant: Tenant) -> WsTicket:
    """A single-use ticket carrying the tenant's organization, scopes and identity."""
    ticket = f"{TICKET_PREFIX}{secrets.token_urlsafe(24)}"
    record = {
        "organization": tenant.organization.pk,
        "scopes": sorted(tenant.scopes),
        "api_key": tenant.api_key.pk if tenant.api_key is not None else None,
        "user": tenant.membership.user_id if tenant.membership is not None else None,
    }
    _redis().set(_ticket_cache_key(ticket), json.dumps(record), ex=TICKET_TTL_S)
    return WsTicket(ticket=ticket, expires_at=timezone.now() + timedelta(seconds=TICKET_TTL_S))


def ws_ticket_consume(*, ticket: str) -> Tenant:
    """The tenant a ticket was issued to; the ticket is gone afterwards (also when it was refused)."""
    if not ticket.startswith(TICKET_PREFIX) or len(ticket) > 100:
        raise WsAuthFailed(code="authentication_failed", message="Invalid websocket ticket.")
    raw = _redis().getdel(_ticket_cache_key(ticket))
    if raw is None:
        raise WsAuthFailed(
            code="authentication_failed", message="The ticket is unknown, expired or already used."
        )
    record = json.loads(raw)
    organization = Organization.objects.filter(pk=record["organization"]).first()
    if organization is None:
        raise WsAuthFailed(
            code="authentication_failed", message="The ticket's organization no longer exists."
        )
    scopes = frozenset(record["scopes"])
    if record.get("api_key") is not None:
        api_key = ApiKey.objects.filter(pk=record["api_key"], organization=organization).first()
        now = timezone.now()
        if api_key is None or api_key.revoked_at is not None or api_key.is_expired(now):
            raise WsAuthFailed(
                code="authentication_failed", message="The API key behind the ticket was revoked."
            )
        api_key.organization = organization
        return _tenant(api_key=api_key, scopes=scopes)
    else:
        membership = (
            Membership.objects.select_related("user", "organization")
            .filter(organization=organization, user_id=record.get("user"))
            .first()
        )
        if membership is None:
            raise WsAuthFailed(
                code="authentication_failed", message="The ticket's user is no longer a member."
            )
        return _tenant(membership=membership, scopes=scopes)


def _tenant(**credentials: Any) -> Tenant:
    """`tenant_of` the credentials; at connect a suspended organization is an authentication refusal."""
    try:
        return tenant_of(**credentials)
    except OrganizationSuspended as exc:
        raise WsAuthFailed(code=exc.code, message="This organization is suspended.") from exc


def offered_subprotocols(scope: dict[str, Any]) -> list[str]:
    """The subprotocols the client offered, in order."""
    return [str(protocol).strip() for protocol in scope.get("subprotocols") or []]


def accepted_subprotocol(scope: dict[str, Any]) -> str | None:
    """What the server answers: `lightfast.v1` when offered, never the key-carrying one."""
    return SUBPROTOCOL if SUBPROTOCOL in offered_subprotocols(scope) else None


def origin_allowed(scope: dict[str, Any]) -> bool:
    """True when the `Origin` header names this site (ALLOWED_HOSTS or CSRF_TRUSTED_ORIGINS)."""
    origin = ""
    for name, value in scope.get("headers") or []:
        if name == b"origin":
            origin = value.decode("latin-1")
    if not origin:
        return False
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    domain, _port = split_domain_port(parts.netloc.rsplit("@", 1)[-1])
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


def _header(scope: dict[str, Any], wanted: bytes) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _key_tenant(raw_key: str) -> Tenant:
    if raw_key.startswith(CLIENT_TOKEN_PREFIX):
        try:
            return client_token_tenant(raw_key)
        except AuthenticationFailed as exc:
            raise WsAuthFailed(code="authentication_failed", message=str(exc.detail)) from exc
    try:
        api_key = apikey_authenticate(raw_key=raw_key)
    except ApiKeyRejected as exc:
        raise WsAuthFailed(code="authentication_failed", message=exc.message) from exc
    return _tenant(api_key=api_key)


def ws_tenant_resolve(scope: dict[str, Any], *, ip: str) -> Tenant:
    """The websocket's tenant from a ticket, an API key (subprotocol or Authorization) or a session.

    Raises WsAuthFailed, or RateLimited when the client IP `ip` is over its failed-authentication
    limit (then for every refusal alike, so a blocked client learns nothing about what it sent).
    """
    try:
        tenant = _resolve(scope)
        route = (scope.get("url_route") or {}).get("kwargs") or {}
        if tenant.agent is not None and tenant.agent != f"{route.get('bundle')}/{route.get('agent')}":
            raise WsAuthFailed(code="permission_denied", message="This client token is for another agent.")
        if tenant.agent is not None:
            _client_origin_check(scope, tenant)
        return tenant
    except WsAuthFailed as exc:
        refusal = (
            ratelimit_auth_failure(ip=ip)
            if exc.code in CREDENTIAL_FAILURES
            else ratelimit_auth_blocked(ip=ip)
        )
        if refusal is not None:
            raise refusal from exc
        raise


def _client_origin_check(scope: dict[str, Any], tenant: Tenant) -> None:
    """A client token from a browser page: the page must be on one of the organization's origins."""
    origin = _header(scope, b"origin")
    if not origin or origin_allowed(scope):
        return
    canonical = cors_origin_canonical(origin)
    if canonical is None or tenant.organization.pk not in organizations_allowing_origin(canonical):
        raise WsAuthFailed(code="origin_not_allowed", message="This page's origin is not allowed.")


def _resolve(scope: dict[str, Any]) -> Tenant:
    query = parse_qs((scope.get("query_string") or b"").decode("latin-1"))
    if "key" in query or "api_key" in query:
        raise WsAuthFailed(
            code="authentication_failed",
            message="Never put an API key in a URL; use a ticket or the Sec-WebSocket-Protocol header.",
        )
    tickets = query.get("ticket")
    if tickets:
        return ws_ticket_consume(ticket=tickets[0])
    for protocol in offered_subprotocols(scope):
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX):
            return _key_tenant(protocol[len(KEY_SUBPROTOCOL_PREFIX) :])
    authorization = _header(scope, b"authorization")
    if authorization:
        keyword, _, token = authorization.partition(" ")
        if keyword.lower() == "bearer" and token.strip():
            return _key_tenant(token.strip())
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        if not origin_allowed(scope):
            raise WsAuthFailed(
                code="origin_not_allowed", message="Session websockets must come from this site."
            )
        wanted = query.get("organization", [None])[0]
        membership = membership_for_user(user=user, organization_ref=wanted)
        if membership is None:
            raise WsAuthFailed(
                code="not_found", message="No organization of yours matches (name one with ?organization=)."
            )
        return _tenant(
            membership=membership,
            user=user,
            session_key=getattr(scope.get("session"), "session_key", None),
        )
    raise WsAuthFailed(
        code="not_authenticated", message="Authenticate with a ticket, an API key or a session."
    )
