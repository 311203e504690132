"""Writes to tenancy data: organizations, memberships and API keys, each recorded in the audit log."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, models, transaction
from django.dispatch import Signal
from django.utils import timezone
from rest_framework import status

from lightfast_cloud.api_errors import ApiError

if TYPE_CHECKING:
    from django.contrib.auth.models import User

from organizations.encryption import secret_encrypt
from organizations.host_patterns import (
    InvalidHostPattern,
    host_pattern_normalise,
    provider_base_url_check,
    secret_host_pattern_normalise,
)
from organizations.models import (
    API_KEY_LAST_USED_RESOLUTION,
    API_KEY_LOOKUP_LENGTH,
    API_KEY_PREFIX,
    HEADER_NAME_PATTERN,
    VARIABLE_KEY_PATTERN,
    ActorType,
    ApiKey,
    AuditLog,
    EgressAllowedHost,
    Membership,
    ModelProviderConfig,
    Organization,
    OrganizationVariable,
    Role,
    SandboxBackend,
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
    error_type = "scope_escalation"
    default_detail = "A key can only have scopes its creator has (an API key's scopes or a member's role)."


class ExpiryEscalation(TenancyError):
    status_code = status.HTTP_403_FORBIDDEN
    error_type = "expiry_escalation"
    default_detail = "A key created by an expiring key must expire no later than the key that creates it."


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


# Sent once the transaction commits, with `groups`: the channel-layer groups (`connections_group` of
# an API key, membership or organization) whose live connections must re-check their credentials.
# The runs app publishes it (execution/receivers.py); organizations does not talk to the layer.
credentials_changed = Signal()


def credentials_changed_on_commit(*, groups: Iterable[str]) -> None:
    """Tell the live connections of `groups` to re-check their credentials once this transaction commits."""
    names = sorted(set(groups))
    if names:
        transaction.on_commit(lambda: credentials_changed.send(sender=None, groups=names))


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


# --- sandbox and model settings: variables, secrets, egress hosts, provider, backend ---

MAX_VARIABLES = 100
MAX_VARIABLE_VALUE_BYTES = 32 * 1024
MAX_INJECT_HOSTS = 20
MAX_EGRESS_HOSTS = 200
MAX_MODEL_MAP_ENTRIES = 200
# Headers the egress code computes itself or that change how the request is framed or routed.
FORBIDDEN_INJECT_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "cookie2",
    }
)


class SettingInvalid(TenancyError):
    """A variable, secret, egress host or provider setting that cannot be stored as given."""

    error_type = "invalid_input"


class SettingLimitReached(TenancyError):
    status_code = status.HTTP_409_CONFLICT
    error_type = "quota_exceeded"


class SettingConflict(TenancyError):
    status_code = status.HTTP_409_CONFLICT
    error_type = "conflict"
    default_detail = "Another request changed this setting at the same time; try again."


@dataclass(frozen=True)
class VariableFields:
    """A variable's validated, normalised fields (what `variable_clean` returns)."""

    key: str
    value: str | None
    is_secret: bool
    inject_header: str
    inject_prefix: str
    inject_hosts: list[str]


def _check_header_text(text: str, field_name: str) -> None:
    if any(ch in text for ch in "\r\n\0"):
        raise SettingInvalid(f"{field_name} cannot contain line breaks.", detail={field_name: "line break"})
    try:
        text.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise SettingInvalid(
            f"{field_name} must be Latin-1 text to travel in an HTTP header.", detail={field_name: "encoding"}
        ) from exc


def variable_clean(
    *,
    key: str,
    value: str | None,
    is_secret: bool,
    inject_header: str = "",
    inject_prefix: str = "",
    inject_hosts: Iterable[str] = (),
    existing: OrganizationVariable | None = None,
) -> VariableFields:
    """Validate a variable as `variable_set` would store it; raises SettingInvalid naming the field."""
    if not re.fullmatch(VARIABLE_KEY_PATTERN, key):
        raise SettingInvalid(
            "A variable key is letters, digits and _, not starting with a digit (at most 128).",
            detail={"key": key[:200]},
        )
    keeps_secret = value is None and existing is not None and existing.is_secret and is_secret
    if value is None and not keeps_secret:
        raise SettingInvalid("`value` is required.", detail={"value": "required"})
    if value is not None and len(value.encode()) > MAX_VARIABLE_VALUE_BYTES:
        raise SettingInvalid(
            f"A value has at most {MAX_VARIABLE_VALUE_BYTES} bytes.", detail={"value": "too long"}
        )
    hosts = list(inject_hosts)
    if not is_secret:
        if inject_header or inject_prefix or hosts:
            raise SettingInvalid(
                "inject_header, inject_prefix and inject_hosts apply to secrets only.",
                detail={"is_secret": False},
            )
        return VariableFields(key, value, False, "", "", [])
    if not re.fullmatch(HEADER_NAME_PATTERN, inject_header or ""):
        raise SettingInvalid(
            "A secret needs inject_header, the HTTP header the host adds (e.g. Authorization).",
            detail={"inject_header": inject_header[:200]},
        )
    if inject_header.lower() in FORBIDDEN_INJECT_HEADERS:
        raise SettingInvalid(
            f"The header {inject_header!r} cannot carry a secret.", detail={"inject_header": inject_header}
        )
    _check_header_text(inject_prefix, "inject_prefix")
    if value is not None:
        _check_header_text(value, "value")
    if not hosts:
        raise SettingInvalid(
            "A secret needs inject_hosts: the hosts (exact or *.domain) that receive it.",
            detail={"inject_hosts": "required"},
        )
    if len(hosts) > MAX_INJECT_HOSTS:
        raise SettingInvalid(f"At most {MAX_INJECT_HOSTS} inject_hosts.", detail={"inject_hosts": "too many"})
    normalised: list[str] = []
    for pattern in hosts:
        try:
            cleaned = secret_host_pattern_normalise(str(pattern))
        except InvalidHostPattern as exc:
            raise SettingInvalid(str(exc), detail={"inject_hosts": str(pattern)[:253]}) from exc
        if cleaned not in normalised:
            normalised.append(cleaned)
    if keeps_secret:
        assert existing is not None
        _check_secret_not_repointed(existing, inject_header=inject_header, inject_hosts=normalised)
    return VariableFields(key, value, True, inject_header, inject_prefix, normalised)


def _check_secret_not_repointed(
    existing: OrganizationVariable, *, inject_header: str, inject_hosts: list[str]
) -> None:
    """Sending a stored secret somewhere new needs its value again (removing hosts does not).

    Otherwise a write key that never knew the value could send it to a host it controls.
    """
    added = [pattern for pattern in inject_hosts if pattern not in (existing.inject_hosts or [])]
    if added or inject_header.lower() != existing.inject_header.lower():
        raise SettingInvalid(
            "Sending a stored secret to new hosts or in another header needs its value again: give `value`.",
            detail={"value": "required", "inject_hosts": added[:10]},
        )


@transaction.atomic
def variable_set(
    *,
    organization: Organization,
    key: str,
    value: str | None,
    actor: Actor,
    is_secret: bool = False,
    inject_header: str = "",
    inject_prefix: str = "",
    inject_hosts: Iterable[str] = (),
) -> tuple[OrganizationVariable, bool]:
    """Create or replace a variable; returns it and whether it was created.

    `value=None` keeps a stored secret's value (to change only where it is sent). Neither the
    audit log nor any response ever carries a secret's value.
    """
    existing = (
        OrganizationVariable.objects.select_for_update().filter(organization=organization, key=key).first()
    )
    fields = variable_clean(
        key=key,
        value=value,
        is_secret=is_secret,
        inject_header=inject_header,
        inject_prefix=inject_prefix,
        inject_hosts=inject_hosts,
        existing=existing,
    )
    created = existing is None
    if created:
        if OrganizationVariable.objects.filter(organization=organization).count() >= MAX_VARIABLES:
            raise SettingLimitReached(f"An organization has at most {MAX_VARIABLES} variables and secrets.")
        variable = OrganizationVariable(organization=organization, key=fields.key)
    else:
        assert existing is not None
        variable = existing
    was_secret = variable.is_secret if not created else None
    variable.is_secret = fields.is_secret
    if fields.is_secret:
        if fields.value is not None:
            variable.secret_token = secret_encrypt(fields.value)
        variable.value = ""
    else:
        variable.value = fields.value or ""
        variable.secret_token = ""
    variable.inject_header = fields.inject_header
    variable.inject_prefix = fields.inject_prefix
    variable.inject_hosts = fields.inject_hosts
    variable.updated_at = timezone.now()
    try:
        with transaction.atomic():
            variable.save()
    except IntegrityError as exc:  # a concurrent PUT created the same key first
        raise SettingConflict() from exc
    audit_record(
        actor=actor,
        action="variable.created" if created else "variable.changed",
        organization=organization,
        target_type="variable",
        target_id=variable.key,
        metadata={
            "key": variable.key,
            "is_secret": variable.is_secret,
            "was_secret": was_secret,
            "value_changed": fields.value is not None,
            "inject_header": variable.inject_header,
            "inject_hosts": variable.inject_hosts,
        },
    )
    return variable, created


@transaction.atomic
def variable_delete(*, variable: OrganizationVariable, actor: Actor) -> None:
    """Delete a variable or secret."""
    audit_record(
        actor=actor,
        action="variable.deleted",
        organization=variable.organization,
        target_type="variable",
        target_id=variable.key,
        metadata={"key": variable.key, "is_secret": variable.is_secret},
    )
    variable.delete()


def egress_host_clean(*, pattern: str) -> str:
    """The canonical allow-list pattern; raises SettingInvalid with the reason."""
    try:
        return host_pattern_normalise(pattern)
    except InvalidHostPattern as exc:
        raise SettingInvalid(str(exc), detail={"pattern": pattern[:253]}) from exc


@transaction.atomic
def egress_host_add(
    *, organization: Organization, pattern: str, actor: Actor
) -> tuple[EgressAllowedHost, bool]:
    """Allow the organization's sandbox code to fetch from `pattern`; adding it twice changes nothing."""
    cleaned = egress_host_clean(pattern=pattern)
    existing = EgressAllowedHost.objects.filter(organization=organization, pattern=cleaned).first()
    if existing is not None:
        return existing, False
    if EgressAllowedHost.objects.filter(organization=organization).count() >= MAX_EGRESS_HOSTS:
        raise SettingLimitReached(f"An organization has at most {MAX_EGRESS_HOSTS} allowed hosts.")
    try:
        with transaction.atomic():
            host = EgressAllowedHost.objects.create(organization=organization, pattern=cleaned)
    except IntegrityError:  # added concurrently: same outcome as adding it twice
        return EgressAllowedHost.objects.get(organization=organization, pattern=cleaned), False
    audit_record(
        actor=actor,
        action="egress_host.added",
        organization=organization,
        target_type="egress_host",
        target_id=cleaned,
        metadata={"pattern": cleaned},
    )
    return host, True


@transaction.atomic
def egress_host_remove(*, host: EgressAllowedHost, actor: Actor) -> None:
    """Stop allowing a host."""
    audit_record(
        actor=actor,
        action="egress_host.removed",
        organization=host.organization,
        target_type="egress_host",
        target_id=host.pattern,
        metadata={"pattern": host.pattern},
    )
    host.delete()


def model_map_clean(*, model_map: Any) -> dict[str, str]:
    """A validated bundle-model-id to provider-model-id map; raises SettingInvalid."""
    if not isinstance(model_map, dict):
        raise SettingInvalid("model_map must be an object of strings.", detail={"model_map": "not an object"})
    if len(model_map) > MAX_MODEL_MAP_ENTRIES:
        raise SettingInvalid(f"model_map has at most {MAX_MODEL_MAP_ENTRIES} entries.")
    for source, target in model_map.items():
        if not (isinstance(source, str) and isinstance(target, str) and source and target):
            raise SettingInvalid(
                "model_map keys and values are non-empty strings.", detail={"key": str(source)[:200]}
            )
        if len(source) > 200 or len(target) > 200:
            raise SettingInvalid("model_map keys and values have at most 200 characters.")
    return dict(model_map)


def model_provider_clean(*, base_url: str) -> str:
    """A base URL the platform may call for an organization (or "" for the platform's provider)."""
    if not base_url.strip():
        return ""
    try:
        return provider_base_url_check(base_url)
    except InvalidHostPattern as exc:
        raise SettingInvalid(str(exc), detail={"base_url": base_url[:500]}) from exc


@transaction.atomic
def model_provider_set(
    *,
    organization: Organization,
    base_url: str,
    model_map: dict[str, str],
    actor: Actor,
    api_key: str | None = None,
) -> ModelProviderConfig:
    """Set the organization's model provider; `api_key=None` keeps the stored key unless the URL changes.

    A key is never sent to a URL it was not stored with: changing `base_url` without a new
    key drops the old one, so write access cannot redirect the key to another server.
    """
    cleaned_url = model_provider_clean(base_url=base_url)
    cleaned_map = model_map_clean(model_map=model_map)
    if api_key is not None:
        _check_header_text(api_key, "api_key")
    config, created = ModelProviderConfig.objects.select_for_update().get_or_create(organization=organization)
    url_changed = config.base_url != cleaned_url
    if api_key is not None:
        config.api_key_token = secret_encrypt(api_key) if api_key else ""
    elif url_changed:
        config.api_key_token = ""
    config.base_url = cleaned_url
    config.model_map = cleaned_map
    config.updated_at = timezone.now()
    config.save()
    audit_record(
        actor=actor,
        action="model_provider.changed",
        organization=organization,
        target_type="model_provider",
        target_id=organization.public_id,
        metadata={
            "base_url": cleaned_url,
            "model_map": cleaned_map,
            "api_key_changed": api_key is not None or (url_changed and not created),
            "has_api_key": config.has_api_key,
        },
    )
    return config


@transaction.atomic
def model_provider_clear(*, organization: Organization, actor: Actor) -> None:
    """Go back to the platform's model provider; the stored key is deleted."""
    deleted, _ = ModelProviderConfig.objects.filter(organization=organization).delete()
    if deleted:
        audit_record(
            actor=actor,
            action="model_provider.cleared",
            organization=organization,
            target_type="model_provider",
            target_id=organization.public_id,
        )


@transaction.atomic
def organization_set_sandbox_backend(
    *, organization: Organization, backend: str, actor: Actor
) -> Organization:
    """Choose where the organization's JavaScript runs (`local`, `docker`, or "" for the platform default)."""
    if backend not in ("", *SandboxBackend.values):
        raise SettingInvalid(
            f"Unknown sandbox backend {backend!r}.", detail={"backends": ["", *SandboxBackend.values]}
        )
    before = organization.sandbox_backend
    organization.sandbox_backend = backend
    organization.save(update_fields=["sandbox_backend"])
    audit_record(
        actor=actor,
        action="organization.sandbox_backend_changed",
        organization=organization,
        target=organization,
        metadata={"before": before, "after": backend},
    )
    return organization
