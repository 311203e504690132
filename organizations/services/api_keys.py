"""Writes to API keys: creating (scopes and expiry no wider than the creator's), revoking,
authenticating a presented key and stamping its last use."""

from __future__ import annotations

import functools
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from lightfast_cloud import sql
from organizations.errors import (
    ApiKeyRejected,
    ExpiryEscalation,
    InvalidScopes,
    ScopeEscalation,
    TenancyError,
)
from organizations.models import (
    API_KEY_LAST_USED_RESOLUTION,
    API_KEY_LOOKUP_LENGTH,
    API_KEY_PREFIX,
    PUBLIC_ID_ALPHABET,
    ApiKey,
    Organization,
    Scope,
    api_key_hash,
    random_token,
)
from organizations.services.audit import Actor, audit_record, credentials_changed_on_commit


def apikey_parse_scopes(scopes: Iterable[str]) -> list[str]:
    """Validated, de-duplicated scopes in canonical order."""
    given = {scope.strip() for scope in scopes if scope.strip()}
    if not given or not given <= set(Scope.values):
        raise InvalidScopes(detail={"allowed": list(Scope.values), "given": sorted(given)})
    return [scope for scope in Scope.values if scope in given]


@transaction.atomic
def apikey_create(
    *,
    organization: Organization,
    name: str,
    scopes: Iterable[str],
    actor: Actor,
    expires_at: datetime | None = None,
    created_by: User | None = None,
    creator_scopes: Iterable[str] | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the full secret, which is never retrievable again.

    A key never outranks its creator: its scopes are within `creator_scopes` (the calling
    member's role or key) and within the acting key's own; a key created by an expiring key
    expires no later than it (a key without expiry may create any). Operators pass neither.
    """
    scope_list = apikey_parse_scopes(scopes)
    ceilings = [set(creator_scopes)] if creator_scopes is not None else []
    if actor.api_key is not None:
        ceilings.append(set(actor.api_key.scopes))
    for ceiling in ceilings:
        if not set(scope_list) <= ceiling:
            raise ScopeEscalation(
                detail={"allowed": [s for s in Scope.values if s in ceiling], "requested": scope_list}
            )
    if expires_at is not None and expires_at <= timezone.now():
        raise TenancyError("expires_at must be in the future.")
    parent_expiry = actor.api_key.expires_at if actor.api_key is not None else None
    if parent_expiry is not None and (expires_at is None or expires_at > parent_expiry):
        raise ExpiryEscalation(
            detail={
                "max_expires_at": parent_expiry.isoformat(),
                "requested": expires_at.isoformat() if expires_at else None,
            }
        )
    lookup_id = random_token(API_KEY_LOOKUP_LENGTH)
    raw_key = f"{API_KEY_PREFIX}{lookup_id}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        organization=organization,
        name=name,
        lookup_id=lookup_id,
        hashed_key=api_key_hash(raw_key),
        scopes=scope_list,
        expires_at=expires_at,
        created_by=created_by if created_by is not None else actor.user,
    )
    audit_record(
        actor=actor,
        action="apikey.created",
        organization=organization,
        target=api_key,
        metadata={
            "name": name,
            "scopes": scope_list,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return api_key, raw_key


@transaction.atomic
def apikey_revoke(*, api_key: ApiKey, actor: Actor, reason: str = "") -> ApiKey:
    """Revoke a key at once; revoking a revoked key changes nothing."""
    updated = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    api_key.refresh_from_db(fields=["revoked_at"])
    if updated:
        credentials_changed_on_commit(groups=[api_key.connections_group])
        audit_record(
            actor=actor,
            action="apikey.revoked",
            organization=api_key.organization,
            target=api_key,
            reason=reason,
            metadata={"name": api_key.name},
        )
    return api_key


def apikey_authenticate(*, raw_key: str) -> ApiKey:
    """The active key matching `raw_key`, or ApiKeyRejected; marks it used at most once a minute."""
    if not raw_key.startswith(API_KEY_PREFIX):
        raise ApiKeyRejected()
    lookup_id, _, secret = raw_key[len(API_KEY_PREFIX) :].partition("_")
    if len(lookup_id) != API_KEY_LOOKUP_LENGTH or not secret or not set(lookup_id) <= _LOOKUP_CHARACTERS:
        raise ApiKeyRejected()
    api_key = _api_key_by_lookup_id(lookup_id)
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, api_key_hash(raw_key)):
        raise ApiKeyRejected()
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise ApiKeyRejected("This API key has been revoked.")
    if api_key.is_expired(now):
        raise ApiKeyRejected("This API key has expired.")
    apikey_mark_used(api_key=api_key, now=now)
    return api_key


_LOOKUP_CHARACTERS = frozenset(PUBLIC_ID_ALPHABET)
_KEY_FIELDS = tuple(field.name for field in ApiKey._meta.concrete_fields)
_ORGANIZATION_FIELDS = tuple(field.name for field in Organization._meta.concrete_fields)


def _api_key_by_lookup_id(lookup_id: str) -> ApiKey | None:
    """The key with this lookup id and its organization, every field loaded (every API request reads it:
    one plain statement built once instead of a query the ORM would compile each time)."""
    row = sql.fetch_one(_api_key_sql(sql.vendor()), [lookup_id])
    if row is None:
        return None
    api_key = sql.instance(ApiKey, _KEY_FIELDS, row[: len(_KEY_FIELDS)])
    api_key.organization = sql.instance(Organization, _ORGANIZATION_FIELDS, row[len(_KEY_FIELDS) :])
    return api_key


@functools.cache
def _api_key_sql(vendor: str) -> str:
    organization_id = sql.column(Organization, "id")
    # Identifiers from model metadata; the lookup id is a parameter.
    return (
        f"SELECT {sql.select_columns(ApiKey, _KEY_FIELDS, 'k')},"  # noqa: S608
        f" {sql.select_columns(Organization, _ORGANIZATION_FIELDS, 'o')}"
        f" FROM {sql.table(ApiKey)} k INNER JOIN {sql.table(Organization)} o"
        f" ON o.{organization_id} = k.{sql.column(ApiKey, 'organization')}"
        f" WHERE k.{sql.column(ApiKey, 'lookup_id')} = %s"
    )


def apikey_mark_used(*, api_key: ApiKey, now: datetime) -> None:
    """Record use with at most one conditional UPDATE per key per minute, whatever the request rate."""
    if api_key.last_used_at is not None and now - api_key.last_used_at < API_KEY_LAST_USED_RESOLUTION:
        return
    stale = models.Q(last_used_at__isnull=True) | models.Q(
        last_used_at__lt=now - API_KEY_LAST_USED_RESOLUTION
    )
    ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
