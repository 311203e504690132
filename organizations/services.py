"""Writes to tenancy data: organizations, memberships and API keys, each recorded in the audit log."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction
from django.utils import timezone
from rest_framework import status

from lightfast_cloud.api_errors import ApiError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.models import (
    API_KEY_LAST_USED_RESOLUTION,
    API_KEY_LOOKUP_LENGTH,
    API_KEY_PREFIX,
    ActorType,
    ApiKey,
    AuditLog,
    Membership,
    Organization,
    Role,
    Scope,
    api_key_hash,
    random_token,
)


class TenancyError(ApiError):
    """A tenancy write that cannot be done as asked."""

    error_type = "invalid_input"


class OrganizationSlugTaken(TenancyError):
    status_code = status.HTTP_409_CONFLICT
    error_type = "conflict"


class InvalidScopes(TenancyError):
    default_detail = "Scopes must be a non-empty subset of read, write, execute."


class ScopeEscalation(TenancyError):
    status_code = status.HTTP_403_FORBIDDEN
    error_type = "permission_denied"
    default_detail = "A key cannot create a key with scopes it does not have itself."


class LastOwner(TenancyError):
    status_code = status.HTTP_409_CONFLICT
    error_type = "conflict"
    default_detail = "An organization must keep at least one owner."


class ApiKeyRejected(ApiError):
    """The presented API key does not authenticate; the message says why without revealing other keys."""

    status_code = status.HTTP_401_UNAUTHORIZED
    error_type = "authentication_failed"
    default_detail = "Invalid API key."


@dataclass(frozen=True)
class Actor:
    """Who performs an action, as recorded in the audit log."""

    type: str
    label: str
    user: Any = None
    api_key: ApiKey | None = None

    @classmethod
    def for_user(cls, user: User) -> Actor:
        """A signed-in person (dashboard, admin)."""
        return cls(type=ActorType.USER, label=user.get_username(), user=user)

    @classmethod
    def for_api_key(cls, api_key: ApiKey) -> Actor:
        """A program holding an API key."""
        return cls(type=ActorType.API_KEY, label=api_key.display_prefix, api_key=api_key)

    @classmethod
    def operator(cls, label: str = "operator", user: User | None = None) -> Actor:
        """A platform operator (command line or admin)."""
        return cls(type=ActorType.OPERATOR, label=label, user=user)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        """The platform itself (launcher, periodic tasks)."""
        return cls(type=ActorType.SYSTEM, label=label)


def audit_record(
    *,
    actor: Actor,
    action: str,
    organization: Organization | None,
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    reason: str = "",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """Append one audit log entry; `target` fills target type and id from a model instance."""
    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(
            getattr(target, "public_id", None) or getattr(target, "lookup_id", None) or target.pk
        )
    return AuditLog.objects.create(
        organization=organization,
        actor_type=actor.type,
        actor_user=actor.user,
        actor_api_key=actor.api_key,
        actor_label=actor.label[:200],
        action=action,
        target_type=target_type,
        target_id=target_id[:64],
        reason=reason,
        metadata=metadata or {},
    )


def user_get_or_create_by_email(*, email: str) -> tuple[User, bool]:
    """The user with this email (also their username), created without a usable password if missing."""
    user_model = get_user_model()
    email = user_model.objects.normalize_email(email.strip())
    user = user_model.objects.filter(models.Q(email__iexact=email) | models.Q(username__iexact=email)).first()
    if user is not None:
        return user, False
    user = user_model(username=email, email=email)
    user.set_unusable_password()
    user.save()
    return user, True


@transaction.atomic
def org_create(*, slug: str, name: str, owner: User, actor: Actor) -> Organization:
    """Create an organization with `owner` as its first owner."""
    organization = Organization(slug=slug, name=name or slug)
    try:
        organization.full_clean()
    except DjangoValidationError as exc:
        if "slug" in exc.message_dict and Organization.objects.filter(slug=slug).exists():
            raise OrganizationSlugTaken(f"An organization with slug {slug!r} already exists.") from exc
        raise TenancyError("Invalid organization.", detail=exc.message_dict) from exc
    try:
        with transaction.atomic():
            organization.save()
    except IntegrityError as exc:  # a concurrent create won the race for the slug
        raise OrganizationSlugTaken(f"An organization with slug {slug!r} already exists.") from exc
    audit_record(
        actor=actor,
        action="organization.created",
        organization=organization,
        target=organization,
        metadata={"slug": slug, "name": organization.name},
    )
    membership_add(organization=organization, user=owner, role=Role.OWNER, actor=actor)
    return organization


@transaction.atomic
def org_update_limits(
    *, organization: Organization, changes: dict[str, Any], actor: Actor, reason: str = ""
) -> Organization:
    """Change plan limits; records old and new values."""
    unknown = set(changes) - set(Organization.LIMIT_FIELDS)
    if unknown:
        raise TenancyError(f"Unknown limits: {', '.join(sorted(unknown))}.")
    before = {name: getattr(organization, name) for name in changes}
    for name, value in changes.items():
        setattr(organization, name, value)
    try:
        organization.full_clean()
    except DjangoValidationError as exc:
        raise TenancyError("Invalid limits.", detail=exc.message_dict) from exc
    organization.save(update_fields=list(changes))
    audit_record(
        actor=actor,
        action="organization.limits_changed",
        organization=organization,
        target=organization,
        reason=reason,
        metadata={"before": before, "after": {name: getattr(organization, name) for name in changes}},
    )
    return organization


@transaction.atomic
def membership_add(*, organization: Organization, user: User, role: str, actor: Actor) -> Membership:
    """Add `user` to the organization with `role`."""
    if role not in Role.values:
        raise TenancyError(f"Unknown role {role!r}.", detail={"roles": list(Role.values)})
    if Membership.objects.filter(organization=organization, user=user).exists():
        raise TenancyError(f"{user.get_username()} is already a member of {organization.slug}.")
    membership = Membership.objects.create(organization=organization, user=user, role=role)
    audit_record(
        actor=actor,
        action="member.added",
        organization=organization,
        target=membership,
        metadata={"user": user.get_username(), "role": role},
    )
    return membership


def _is_last_owner(membership: Membership) -> bool:
    if membership.role != Role.OWNER:
        return False
    owners = Membership.objects.select_for_update().filter(
        organization=membership.organization_id, role=Role.OWNER
    )
    return [row.pk for row in owners] == [membership.pk]


@transaction.atomic
def membership_change_role(*, membership: Membership, role: str, actor: Actor) -> Membership:
    """Change a member's role; the last owner cannot be demoted."""
    if role not in Role.values:
        raise TenancyError(f"Unknown role {role!r}.", detail={"roles": list(Role.values)})
    if role != Role.OWNER and _is_last_owner(membership):
        raise LastOwner()
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        actor=actor,
        action="member.role_changed",
        organization=membership.organization,
        target=membership,
        metadata={"user": membership.user.get_username(), "before": before, "after": role},
    )
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership, actor: Actor) -> None:
    """Remove a member; the last owner cannot be removed."""
    if _is_last_owner(membership):
        raise LastOwner()
    audit_record(
        actor=actor,
        action="member.removed",
        organization=membership.organization,
        target=membership,
        metadata={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()


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
) -> tuple[ApiKey, str]:
    """Create a key; returns it with the full secret, which is never retrievable again."""
    scope_list = apikey_parse_scopes(scopes)
    if actor.api_key is not None and not set(scope_list) <= set(actor.api_key.scopes):
        raise ScopeEscalation()
    if expires_at is not None and expires_at <= timezone.now():
        raise TenancyError("expires_at must be in the future.")
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
    if len(lookup_id) != API_KEY_LOOKUP_LENGTH or not secret:
        raise ApiKeyRejected()
    api_key = ApiKey.objects.select_related("organization").filter(lookup_id=lookup_id).first()
    if api_key is None or not hmac.compare_digest(api_key.hashed_key, api_key_hash(raw_key)):
        raise ApiKeyRejected()
    now = timezone.now()
    if api_key.revoked_at is not None:
        raise ApiKeyRejected("This API key has been revoked.")
    if api_key.is_expired(now):
        raise ApiKeyRejected("This API key has expired.")
    apikey_mark_used(api_key=api_key, now=now)
    return api_key


def apikey_mark_used(*, api_key: ApiKey, now: datetime) -> None:
    """Record use with at most one conditional UPDATE per key per minute, whatever the request rate."""
    if api_key.last_used_at is not None and now - api_key.last_used_at < API_KEY_LAST_USED_RESOLUTION:
        return
    stale = models.Q(last_used_at__isnull=True) | models.Q(
        last_used_at__lt=now - API_KEY_LAST_USED_RESOLUTION
    )
    ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now)
    api_key.last_used_at = now
