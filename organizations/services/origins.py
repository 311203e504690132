"""Services for the browser origins an organization allows (CORS)."""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db import transaction

from organizations.errors import SettingInvalid
from organizations.models import AllowedOrigin, Organization
from organizations.services.audit import Actor
from organizations.services.setting_rows import setting_row_add, setting_row_remove

MAX_ALLOWED_ORIGINS = 50
# Plain http only for a developer's own machine; every other origin must be https.
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def allowed_origin_clean(*, origin: str) -> str:
    """The canonical origin (`scheme://host[:port]`, lower case, no default port); raises SettingInvalid."""
    raw = origin.strip()
    detail = {"origin": raw[:300]}
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise SettingInvalid(f"Not an origin: {exc}.", detail=detail) from exc
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in ("http", "https") or not host:
        raise SettingInvalid("An origin is `https://host` or `https://host:port`.", detail=detail)
    if parts.username is not None or parts.password is not None:
        raise SettingInvalid("An origin has no user name or password.", detail=detail)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise SettingInvalid("An origin has no path, query or fragment.", detail=detail)
    if "*" in host:
        raise SettingInvalid("Wildcards are not allowed: list each origin.", detail=detail)
    if scheme == "http" and host not in _LOCAL_HOSTS:
        raise SettingInvalid("Only localhost may use http; other origins must be https.", detail=detail)
    if ":" in host:  # an IPv6 literal, which urlsplit returns without brackets
        host = f"[{host}]"
    default = 443 if scheme == "https" else 80
    cleaned = f"{scheme}://{host}" + (f":{port}" if port is not None and port != default else "")
    if len(cleaned) > 300:
        raise SettingInvalid("The origin is too long.", detail=detail)
    return cleaned


@transaction.atomic
def allowed_origin_add(
    *, organization: Organization, origin: str, actor: Actor
) -> tuple[AllowedOrigin, bool]:
    """Let pages from `origin` call the organization's API; adding it twice changes nothing."""
    cleaned = allowed_origin_clean(origin=origin)
    allowed, created = setting_row_add(
        model=AllowedOrigin,
        organization=organization,
        field="origin",
        value=cleaned,
        limit=MAX_ALLOWED_ORIGINS,
        limit_message=f"An organization has at most {MAX_ALLOWED_ORIGINS} allowed origins.",
        subject="allowed_origin",
        actor=actor,
    )
    if created:
        transaction.on_commit(_forget_cached_origins)
    return allowed, created


@transaction.atomic
def allowed_origin_remove(*, allowed: AllowedOrigin, actor: Actor) -> None:
    """Stop allowing an origin."""
    setting_row_remove(
        row=allowed,
        subject="allowed_origin",
        target_id=allowed.origin,
        metadata={"origin": allowed.origin},
        actor=actor,
    )
    transaction.on_commit(_forget_cached_origins)


def _forget_cached_origins() -> None:
    from organizations.selectors import allowed_origins_forget

    allowed_origins_forget()
