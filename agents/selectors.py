"""Shared reads of bundles: lookups, the agents list, and what the sandbox needs to run a version."""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from agents.models import Bundle, BundleVersion, VersionStatus
from agents.storage import storage_read
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from lightfast_cloud import sql
from organizations.host_patterns import ca_file_for_tests, loopback_allowed_for_tests
from organizations.models import MIB, EgressAllowedHost, Organization, OrganizationVariable
from organizations.selectors import sandbox_config_for

# Introspection evaluates top-level code only: a real 2 MB bundle needs well under a second.
INTROSPECT_LIMITS = Limits(cpu_ms=3000, wall_ms=10000, memory_mb=128)
# Bounds for a direct tool call; the plan's per-run limits lower them further.
TOOL_DEFAULT_TIMEOUT_MS = 30_000
TOOL_MAX_CPU_MS = 30_000
TOOL_MAX_MEMORY_MB = 512
LONG_POLL_MAX_S = 30.0
LONG_POLL_INTERVAL_S = 0.1
_CACHE_SIZE = 32


@dataclass
class StoredBundle:
    """A version's transformed script as the sandbox API takes it (what `transform` produced at upload)."""

    script: str
    source_map: dict[str, Any] | None
    sha256: str
    bytes: int
    imports: list[str]


@dataclass(frozen=True)
class SandboxSettings:
    """What an organization's code may see and reach in the sandbox, and where it runs."""

    env: dict[str, str] = field(default_factory=dict)
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    backend: str | None = None


def sandbox_settings_for(organization: Organization) -> SandboxSettings:
    """The one place runs and direct tool calls get the organization's sandbox settings from.

    `env` is the non-secret variables (`process.env`); the egress policy carries the allow
    list and the secret headers, which the host adds and the sandbox never sees; `backend`
    is the organization's choice or the platform default.

    Every call reads the organization's variable and allow-list rows (one plain SELECT), so a
    change applies from the next call on; the settings built from them (secrets decrypted,
    the policy assembled: most of the cost) are reused while those rows are identical. The
    cache is keyed by the organization and the rows' full content, never shared across
    organizations, and is the read-only input of every call (the sandbox API copies `env`).
    """
    key = (
        organization.pk,
        organization.sandbox_backend,
        settings.LIGHTFAST_SANDBOX_BACKEND,
        loopback_allowed_for_tests(),
        ca_file_for_tests(),
        # Secrets are decrypted with these: a different key must not reuse what the old one read.
        settings.SECRET_KEY,
        tuple(getattr(settings, "SECRET_KEY_FALLBACKS", ()) or ()),
        _sandbox_setting_rows(organization.pk),
    )
    with _sandbox_settings_lock:
        cached = _sandbox_settings_cache.get(key)
        if cached is not None:
            _sandbox_settings_cache.move_to_end(key)
            return cached
    config = sandbox_config_for(organization)
    built = SandboxSettings(
        env=config.env,
        egress=EgressPolicy(
            allow_hosts=config.allow_hosts,
            secret_headers=config.secret_headers,
            secret_values=config.secret_values,
            organization=organization.public_id,
            unsafe_allow_loopback_for_tests=config.allow_loopback_for_tests,
            unsafe_ca_file_for_tests=config.ca_file_for_tests,
        ),
        backend=config.backend,
    )
    with _sandbox_settings_lock:
        _sandbox_settings_cache[key] = built
        while len(_sandbox_settings_cache) > _SETTINGS_CACHE_SIZE:
            _sandbox_settings_cache.popitem(last=False)
    return built


_SETTINGS_CACHE_SIZE = 256
_sandbox_settings_cache: OrderedDict[tuple[Any, ...], SandboxSettings] = OrderedDict()
_sandbox_settings_lock = Lock()


def _sandbox_setting_rows(organization_id: int) -> tuple[tuple[Any, ...], ...]:
    """Every column `sandbox_config_for` builds from: the organization's variables and allowed hosts."""
    return tuple(sql.fetch_all(_sandbox_setting_rows_sql(sql.vendor()), [organization_id, organization_id]))


@functools.cache
def _sandbox_setting_rows_sql(vendor: str) -> str:
    variable = sql.columns(
        OrganizationVariable,
        (
            "id",
            "key",
            "is_secret",
            "value",
            "secret_token",
            "inject_header",
            "inject_prefix",
            "inject_hosts",
            "updated_at",
            "organization",
        ),
    )
    host = sql.columns(EgressAllowedHost, ("id", "pattern", "organization"))
    # Both tables in one round trip; "v"/"h" tell the rows apart, NULLs pad the hosts' rows.
    # Identifiers from model metadata; the organization id is a parameter.
    return (
        f"SELECT 'v', {', '.join(variable[:-1])} FROM {sql.table(OrganizationVariable)}"  # noqa: S608
        f" WHERE {variable[-1]} = %s"
        f" UNION ALL SELECT 'h', {host[0]}, {host[1]}, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        f" FROM {sql.table(EgressAllowedHost)} WHERE {host[-1]} = %s"
        " ORDER BY 1, 2"
    )


def tool_limits_for(organization: Organization, *, timeout_ms: int | None = None) -> Limits:
    """Limits of one tool call: the request's timeout bounded by the plan's per-run limits."""
    plan_wall = int(organization.run_wall_ms)
    wall = min(timeout_ms or TOOL_DEFAULT_TIMEOUT_MS, plan_wall)
    cpu = min(int(organization.run_cpu_ms), TOOL_MAX_CPU_MS, wall)
    memory_mb = max(8, min(int(organization.run_memory_bytes) // MIB, TOOL_MAX_MEMORY_MB))
    return Limits(wall_ms=max(1, wall), cpu_ms=max(1, cpu), memory_mb=memory_mb)


def version_bundle_key(version: BundleVersion) -> str:
    """The sandbox's cache key of a version: never shared across organizations or versions."""
    return f"{version.organization.public_id}:{version.pk}:{version.sha256[:16]}"


_bundle_cache: OrderedDict[tuple[int, str], StoredBundle] = OrderedDict()
_bundle_cache_lock = Lock()


def transformed_bundle_for(version: BundleVersion) -> StoredBundle:
    """The version's transformed script, read from storage once per process (versions never change)."""
    key = (version.pk, version.sha256)
    with _bundle_cache_lock:
        cached = _bundle_cache.get(key)
        if cached is not None:
            _bundle_cache.move_to_end(key)
            return cached
    script = storage_read(name=version.script_file.name or "").decode("utf-8")
    source_map = (
        json.loads(storage_read(name=version.source_map_file.name or "")) if version.source_map_file else None
    )
    bundle = StoredBundle(
        script=script,
        source_map=source_map,
        sha256=version.sha256,
        bytes=version.size_bytes,
        imports=list(version.imports or []),
    )
    with _bundle_cache_lock:
        _bundle_cache[key] = bundle
        while len(_bundle_cache) > _CACHE_SIZE:
            _bundle_cache.popitem(last=False)
    return bundle


def bundle_list(*, organization: Organization) -> QuerySet[Bundle]:
    """The organization's live bundles by slug, with their active version."""
    return Bundle.objects.live().filter(organization=organization).select_related("active_version")


def bundle_get(*, organization: Organization, slug: str) -> Bundle | None:
    """The organization's live bundle with this slug."""
    try:
        # get(): a live slug is unique (bundle_unique_live_slug); first() would add an ORDER BY.
        return bundle_list(organization=organization).get(slug=slug)
    except Bundle.DoesNotExist:
        return None


def version_list(*, bundle: Bundle) -> QuerySet[BundleVersion]:
    """A bundle's versions, newest first."""
    return bundle.versions.select_related("bundle").order_by("-number")


def version_get(*, bundle: Bundle, number: int) -> BundleVersion | None:
    """One version of a bundle by number."""
    return version_list(bundle=bundle).filter(number=number).first()


def version_wait(*, version: BundleVersion, timeout_s: float) -> BundleVersion:
    """Poll until the version leaves `validating` or `timeout_s` passes; no transaction is held meanwhile."""
    deadline = time.monotonic() + min(max(timeout_s, 0.0), LONG_POLL_MAX_S)
    versions = BundleVersion.objects.select_related("bundle")
    while version.status == VersionStatus.VALIDATING and time.monotonic() < deadline:
        time.sleep(min(LONG_POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))
        # A fresh row with its bundle: activation happens together with the status change.
        version = versions.get(pk=version.pk)
    return version


def agent_list(*, organization: Organization) -> list[dict[str, Any]]:
    """Every agent of every active version of the organization, as `bundle/agentKey` entries."""
    agents: list[dict[str, Any]] = []
    for bundle in bundle_list(organization=organization).filter(active_version__status=VersionStatus.READY):
        version = bundle.active_version
        assert version is not None
        for key, agent in version.agents().items():
            agents.append(
                {
                    "id": f"{bundle.slug}/{key}",
                    "bundle": bundle.slug,
                    "agent": key,
                    "version": version.number,
                    "name": agent.name,
                    "system": agent.system,
                    "model": agent.model,
                    "tools": dict(agent.tools),
                    "dynamicTools": agent.dynamic_tools,
                }
            )
    return agents
