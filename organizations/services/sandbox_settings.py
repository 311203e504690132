"""Writes to an organization's sandbox and model settings: variables and secrets, egress hosts, the
model provider."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.utils import timezone

if TYPE_CHECKING:
    pass

from organizations.encryption import secret_encrypt
from organizations.errors import (
    SettingConflict,
    SettingInvalid,
    SettingLimitReached,
)
from organizations.host_patterns import (
    InvalidHostPattern,
    host_pattern_normalise,
    provider_base_url_check,
    secret_host_pattern_normalise,
)
from organizations.models import (
    HEADER_NAME_PATTERN,
    VARIABLE_KEY_PATTERN,
    EgressAllowedHost,
    ModelProviderConfig,
    Organization,
    OrganizationVariable,
)
from organizations.services.audit import Actor, audit_record
from organizations.services.setting_rows import setting_row_add, setting_row_remove

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
    return setting_row_add(
        model=EgressAllowedHost,
        organization=organization,
        field="pattern",
        value=cleaned,
        limit=MAX_EGRESS_HOSTS,
        limit_message=f"An organization has at most {MAX_EGRESS_HOSTS} allowed hosts.",
        subject="egress_host",
        actor=actor,
    )


@transaction.atomic
def egress_host_remove(*, host: EgressAllowedHost, actor: Actor) -> None:
    """Stop allowing a host."""
    setting_row_remove(
        row=host,
        subject="egress_host",
        target_id=host.pattern,
        metadata={"pattern": host.pattern},
        actor=actor,
    )


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
