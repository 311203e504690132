"""Model providers and the rule that maps the model a bundle names to one of them."""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

from execution.providers.base import ModelProvider
from execution.providers.demo import DEMO_MODEL_ID, DemoProvider
from lightfast_cloud import sql
from organizations.models import ModelProviderConfig, Organization
from organizations.selectors import OrganizationModelProvider, model_provider_for

if TYPE_CHECKING:
    # Imported on first use below: the `openai` package takes ~0.35 s to import, paid by every web
    # and worker process at start, and processes that only serve the demo model never need it.
    from execution.providers.openai_compatible import OpenAICompatibleProvider


@dataclass(frozen=True)
class ResolvedModel:
    """Which provider answers a bundle's model, and under which provider model id."""

    provider: ModelProvider
    model: str
    requested: str

    @property
    def label(self) -> str:
        """What the run records as its model."""
        return DEMO_MODEL_ID if isinstance(self.provider, DemoProvider) else self.model


def model_id_from_manifest(model: Any) -> str:
    """The bundle's model id from a manifest `model` value (object with `id`/`modelId`, or a string)."""
    if isinstance(model, str):
        return model
    if isinstance(model, dict):
        for key in ("id", "modelId"):
            if isinstance(model.get(key), str) and model[key]:
                return str(model[key])
        if model.get("provider") == DEMO_MODEL_ID:
            return DEMO_MODEL_ID
    return DEMO_MODEL_ID


def model_map_keys(model: Any) -> list[str]:
    """The model-map keys a manifest `model` is looked up under, most specific first.

    An AI SDK provider model keeps its provider (`openai.responses`, `openai.chat`,
    `anthropic.messages`) beside an id without a family (`gpt-4o-mini`); its family-qualified
    id (`openai/gpt-4o-mini`) comes first, so one map serves gateway ids and provider ids alike.
    """
    requested = model_id_from_manifest(model)
    keys: list[str] = []
    if isinstance(model, dict) and isinstance(model.get("provider"), str) and "/" not in requested:
        family = model["provider"].split(".", 1)[0].strip()
        if family and family not in ("gateway", DEMO_MODEL_ID, "unknown"):
            keys.append(f"{family}/{requested}")
    keys.append(requested)
    return keys


_demo = DemoProvider()
_providers: dict[tuple[Any, ...], OpenAICompatibleProvider] = {}
_providers_lock = threading.Lock()


def _openai_compatible(base_url: str, api_key: str) -> OpenAICompatibleProvider:
    # One client per endpoint and process: its connection pool and TLS context are reused by every run.
    key = (
        base_url,
        api_key,
        settings.LIGHTFAST_MODEL_TIMEOUT_S,
        settings.LIGHTFAST_MODEL_MAX_RETRIES,
        settings.LIGHTFAST_MODEL_RETRY_BACKOFF_S,
    )
    from execution.providers.openai_compatible import OpenAICompatibleProvider

    with _providers_lock:
        provider = _providers.get(key)
        if provider is None:
            provider = _providers[key] = OpenAICompatibleProvider(
                base_url=base_url,
                api_key=api_key,
                timeout_s=settings.LIGHTFAST_MODEL_TIMEOUT_S,
                max_retries=settings.LIGHTFAST_MODEL_MAX_RETRIES,
                backoff_s=settings.LIGHTFAST_MODEL_RETRY_BACKOFF_S,
            )
        return provider


_overrides: dict[tuple[Any, ...], OrganizationModelProvider | None] = {}
_overrides_lock = threading.Lock()
_OVERRIDES_MAX = 1024


def _organization_provider(organization: Organization) -> OrganizationModelProvider | None:
    """`model_provider_for`, reused while the organization's provider row is unchanged.

    Every call reads the row (one plain SELECT), so a change applies to the next run; what was
    built from an identical row (the key decrypted) is reused. Keyed by the organization and the
    row's full content, never shared across organizations.
    """
    row = sql.fetch_one(_provider_row_sql(sql.vendor()), [organization.pk])
    key = (
        organization.pk,
        row,
        # The key is decrypted with these: a different key must not reuse what the old one read.
        settings.SECRET_KEY,
        tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()),
    )
    with _overrides_lock:
        if key in _overrides:
            return _overrides[key]
    override = model_provider_for(organization)
    with _overrides_lock:
        if len(_overrides) >= _OVERRIDES_MAX:
            _overrides.clear()
        _overrides[key] = override
    return override


@functools.cache
def _provider_row_sql(vendor: str) -> str:
    columns = ", ".join(
        sql.column(ModelProviderConfig, name)
        for name in ("id", "base_url", "api_key_token", "model_map", "updated_at")
    )
    organization = sql.column(ModelProviderConfig, "organization")
    # Identifiers from model metadata; the organization id is a parameter.
    return f"SELECT {columns} FROM {sql.table(ModelProviderConfig)} WHERE {organization} = %s"  # noqa: S608


def model_resolve(manifest_model: Any, *, organization: Organization | None = None) -> ResolvedModel:
    """Apply the mapping rule in the module docstring to a manifest `model` value."""
    requested = model_id_from_manifest(manifest_model)
    model_map: dict[str, str] = settings.LIGHTFAST_MODEL_MAP or {}
    base_url: str = settings.LIGHTFAST_MODEL_BASE_URL
    api_key: str = settings.LIGHTFAST_MODEL_API_KEY
    override = _organization_provider(organization) if organization is not None else None
    if override is not None and override.base_url:
        base_url, api_key, model_map = override.base_url, override.api_key, override.model_map
    elif override is not None:
        model_map = {**model_map, **override.model_map}
    keys = model_map_keys(manifest_model)
    mapped = next((model_map[key] for key in keys if key in model_map), model_map.get("*", requested))
    if requested == DEMO_MODEL_ID or mapped == DEMO_MODEL_ID or not base_url:
        return ResolvedModel(provider=_demo, model=DEMO_MODEL_ID, requested=requested)
    return ResolvedModel(provider=_openai_compatible(base_url, api_key), model=mapped, requested=requested)
