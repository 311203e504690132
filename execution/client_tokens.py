"""Client tokens: short-lived credentials, minted with an API key, that let a browser chat with one agent."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core import signing
from django.http import HttpRequest
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.request import Request

from execution.models import Run
from execution.selectors import run_get
from lightfast_cloud.errors import LightfastError
from organizations.models import ApiKey, Scope
from organizations.tenancy import OrganizationSuspended, Tenant, tenant_of

CLIENT_TOKEN_PREFIX = "lf_ct_"  # noqa: S105 - a prefix, not a secret
CLIENT_TOKEN_DEFAULT_TTL_S = 600
CLIENT_TOKEN_MAX_TTL_S = 3600
CLIENT_TOKEN_MIN_TTL_S = 10
# What a token may do: start and read chats; nothing that writes settings or bundles.
CLIENT_TOKEN_SCOPES = frozenset({Scope.EXECUTE, Scope.READ})
_SALT = "lightfast.client-token.v1"


@dataclass(frozen=True)
class ClientToken:
    """A token as the API returns it."""

    token: str
    expires_at: datetime
    bundle: str
    agent: str


def client_token_issue(*, tenant: Tenant, bundle: str, agent: str, ttl_s: int) -> ClientToken:
    """A token for `bundle/agent` of the tenant's organization, acting as the tenant's API key.

    Signed, not stored: it holds the key's id, so revoking (or expiring) the key ends its tokens
    too. Only API keys mint tokens (a browser session has no business handing its rights out).
    """
    if tenant.api_key is None:
        raise LightfastError(code="permission_denied", message="Client tokens are minted with an API key.")
    if not tenant.has_scope(Scope.EXECUTE):
        raise LightfastError(
            code="permission_denied", message="Minting a client token needs the `execute` scope."
        )
    ttl_s = max(CLIENT_TOKEN_MIN_TTL_S, min(CLIENT_TOKEN_MAX_TTL_S, ttl_s))
    expires = int(time.time()) + ttl_s
    payload = {"o": tenant.organization.pk, "k": tenant.api_key.pk, "a": f"{bundle}/{agent}", "e": expires}
    token = CLIENT_TOKEN_PREFIX + _signer().sign_object(payload)
    return ClientToken(
        token=token,
        expires_at=datetime.fromtimestamp(expires, tz=UTC),
        bundle=bundle,
        agent=agent,
    )


def _signer() -> signing.Signer:
    # `.` between payload and signature: the token must be an RFC 7230 token (a websocket
    # subprotocol), which rules out Django's default `:`; the payload is not compressed, since a
    # compressed payload starts with `.`.
    return signing.Signer(salt=_SALT, sep=".")


def client_token_tenant(raw: str) -> Tenant:
    """The tenant a client token stands for, bound to its agent; raises AuthenticationFailed."""
    if not raw.startswith(CLIENT_TOKEN_PREFIX) or len(raw) > 1000:
        raise AuthenticationFailed("Invalid client token.")
    try:
        payload: Any = _signer().unsign_object(raw[len(CLIENT_TOKEN_PREFIX) :])
    except signing.BadSignature as exc:
        raise AuthenticationFailed("Invalid client token.") from exc
    if not isinstance(payload, dict) or not all(isinstance(payload.get(name), int) for name in "eko"):
        raise AuthenticationFailed("Invalid client token.")
    if payload["e"] <= time.time():
        raise AuthenticationFailed("The client token has expired; mint a new one.")
    api_key = (
        ApiKey.objects.select_related("organization")
        .filter(pk=int(payload["k"]), organization_id=int(payload["o"]))
        .first()
    )
    if api_key is None or api_key.revoked_at is not None or api_key.is_expired(datetime.now(tz=UTC)):
        raise AuthenticationFailed("The API key behind the client token was revoked or expired.")
    try:
        tenant = tenant_of(api_key=api_key, scopes=CLIENT_TOKEN_SCOPES)
    except OrganizationSuspended as exc:
        raise AuthenticationFailed(exc.message) from exc
    return dataclasses.replace(tenant, agent=str(payload.get("a")))


def client_token_check_agent(tenant: Tenant, bundle: str, agent: str) -> None:
    """Refuse a client token on any agent but its own (other credentials pass)."""
    if tenant.agent is not None and tenant.agent != f"{bundle}/{agent}":
        raise LightfastError(code="permission_denied", message="This client token is for another agent.")


def client_token_run_get(*, tenant: Tenant, run_id: str) -> Run:
    """`run_get` for the tenant; a client token sees only its own agent's runs (others are `not_found`)."""
    run = run_get(organization=tenant.organization, run_id=run_id)
    if tenant.agent is not None and f"{run.bundle_version.bundle.slug}/{run.agent_key}" != tenant.agent:
        raise LightfastError(code="not_found", message="No such run of this agent.")
    return run


class ClientTokenPrincipal:
    """`request.user` for a client token: acts as its API key, for one agent."""

    is_authenticated = True
    is_active = True
    is_anonymous = False
    is_staff = False
    is_superuser = False
    pk = None

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant


class ClientTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer lf_ct_…` (or `?token=lf_ct_…`); only the chat endpoints use it.

    Anything else in the header is left to the next authenticator (API keys).
    """

    def authenticate(self, request: Request) -> tuple[ClientTokenPrincipal, Tenant] | None:
        """The token's principal and tenant, or None when no client token is presented."""
        header = get_authorization_header(request).split()
        raw: str | None = None
        if len(header) == 2 and header[0].lower() == b"bearer" and header[1].startswith(b"lf_ct_"):
            raw = header[1].decode("ascii", "replace")
        elif not header:
            query = request.query_params.get("token", "")
            raw = query if query.startswith(CLIENT_TOKEN_PREFIX) else None
        if raw is None:
            return None
        tenant = client_token_tenant(raw)
        return ClientTokenPrincipal(tenant), tenant

    def authenticate_header(self, request: Request | HttpRequest) -> str:
        """A 401, not a 403, when credentials are missing."""
        return 'Bearer realm="api"'
