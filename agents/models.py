"""Bundles and their versions: what an organization uploaded, where the files are, the manifest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from organizations.models import Organization

BUNDLE_SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
bundle_slug_validator = RegexValidator(
    BUNDLE_SLUG_PATTERN, "Lowercase letters, digits and inner hyphens only, at most 64 characters."
)


class BundleQuerySet(models.QuerySet["Bundle"]):
    """Queries over bundles."""

    def live(self) -> BundleQuerySet:
        """Bundles that were not deleted."""
        return self.filter(deleted_at__isnull=True)


class Bundle(models.Model):
    """A named slot for an organization's agent bundle; its versions hold the code."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="bundles")
    slug = models.CharField(max_length=64, validators=[bundle_slug_validator])
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    active_version = models.ForeignKey(
        "BundleVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Deleted bundles keep their rows so versions referenced by past runs stay readable;
    # their files are gone and the slug is free again.
    deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = BundleQuerySet.as_manager()

    class Meta:
        ordering = ["slug", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "slug"],
                condition=Q(deleted_at__isnull=True),
                name="bundle_unique_live_slug",
            )
        ]

    def __str__(self) -> str:
        return f"{self.organization.slug}/{self.slug}"


class VersionStatus(models.TextChoices):
    VALIDATING = "validating", "Validating"
    READY = "ready", "Ready"
    REJECTED = "rejected", "Rejected"
    QUARANTINED = "quarantined", "Quarantined"


@dataclass(frozen=True)
class AgentManifest:
    """One agent of a version's manifest as the platform reads it; keys it does not know are ignored."""

    key: str
    name: str
    # As the bundle declared them (the model may be a string or an object with more keys).
    system: Any
    model: Any
    tools: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    dynamic_tools: bool = False
    # `stopWhen` (top level or under `options`; one condition or a list, the AI SDK stops at the
    # first one met): the smallest `stepCountIs(n)`, else None; the tools `hasToolCall` names.
    step_count: int | None = None
    stop_tools: frozenset[str] = frozenset()
    # `providerOptions: {lightfast: {streamLogs: true}}`: tool `console` lines reach the chat's
    # end users (SSE, websocket); otherwise they are only in the run's events (API, dashboard).
    stream_logs: bool = False
    # Tools declared without `execute` (run by the chat's client) and tools with `needsApproval`
    # (run in the sandbox once the user approved the call): the manifest's `clientSide` and
    # `needsApproval` flags.
    client_tools: frozenset[str] = frozenset()
    approval_tools: frozenset[str] = frozenset()

    @classmethod
    def from_spec(cls, key: str, spec: Any) -> AgentManifest:
        """Read one `manifest["agents"][key]` entry, tolerating missing or malformed parts."""
        spec = spec if isinstance(spec, dict) else {}
        tools = spec.get("tools")
        options = spec.get("options")
        stop_when = (options.get("stopWhen") if isinstance(options, dict) else None) or spec.get("stopWhen")
        listed = stop_when if isinstance(stop_when, list) else [stop_when]
        conditions = [c for c in listed if isinstance(c, dict)]
        counts = [n for c in conditions if type(n := c.get("stepCount")) is int and n > 0]
        stop_tools = frozenset(n for c in conditions if isinstance(n := c.get("hasToolCall"), str))
        provider_options = options.get("providerOptions") if isinstance(options, dict) else None
        platform = provider_options.get("lightfast") if isinstance(provider_options, dict) else None
        tool_specs = {
            name: tool if isinstance(tool, dict) else {}
            for name, tool in (tools.items() if isinstance(tools, dict) else ())
        }
        return cls(
            key=key,
            name=str(spec.get("name") or key),
            system=spec.get("system"),
            model=spec.get("model"),
            tools=tool_specs,
            dynamic_tools=bool(spec.get("dynamicTools")),
            step_count=min(counts) if counts else None,
            stop_tools=stop_tools,
            stream_logs=isinstance(platform, dict) and platform.get("streamLogs") is True,
            client_tools=frozenset(
                name for name, tool in tool_specs.items() if tool.get("clientSide") is True
            ),
            approval_tools=frozenset(
                name
                for name, tool in tool_specs.items()
                if tool.get("needsApproval") is True and tool.get("clientSide") is not True
            ),
        )

    @property
    def tool_names(self) -> list[str]:
        """The declared tools, sorted."""
        return sorted(self.tools)

    def has_tool(self, name: str) -> bool:
        """True when the agent declares the tool or takes dynamic tools."""
        return name in self.tools or self.dynamic_tools


class BundleVersion(models.Model):
    """One uploaded file of a bundle, its transformed script and the manifest introspection produced."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="bundle_versions")
    # No index of its own: `bundleversion_unique_number` starts with it (why: execution/models.py,
    # ChatSession).
    bundle = models.ForeignKey(Bundle, on_delete=models.CASCADE, related_name="versions", db_index=False)
    number = models.PositiveIntegerField()
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    original_file = models.FileField(max_length=300, blank=True)
    script_file = models.FileField(max_length=300, blank=True)
    source_map_file = models.FileField(max_length=300, blank=True)
    imports = models.JSONField(default=list, blank=True)
    manifest = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=12, choices=VersionStatus.choices, default=VersionStatus.VALIDATING, db_index=True
    )
    error_type = models.CharField(max_length=32, blank=True)
    error_message = models.TextField(blank=True)
    error_line = models.PositiveIntegerField(null=True, blank=True)
    error_column = models.PositiveIntegerField(null=True, blank=True)
    error_detail = models.JSONField(null=True, blank=True)
    activate_when_ready = models.BooleanField(
        default=True, help_text="Make this version active when introspection succeeds."
    )
    introspect_attempts = models.PositiveSmallIntegerField(default=0)
    introspect_started_at = models.DateTimeField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)
    quarantined_at = models.DateTimeField(null=True, blank=True)
    quarantine_reason = models.TextField(blank=True)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    files_deleted_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["bundle", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["bundle", "number"], name="bundleversion_unique_number"),
            models.UniqueConstraint(fields=["bundle", "sha256"], name="bundleversion_unique_sha256"),
        ]

    def __str__(self) -> str:
        return f"{self.bundle.slug}@{self.number}"

    @property
    def is_runnable(self) -> bool:
        """Only a ready version with its files can run."""
        return self.status == VersionStatus.READY and bool(self.script_file)

    def error_dict(self) -> dict[str, Any] | None:
        """The classified error in the API's error shape, or None."""
        if not self.error_type:
            return None
        detail: dict[str, Any] = dict(self.error_detail or {})
        if self.error_line is not None:
            detail.setdefault("line", self.error_line)
            detail.setdefault("column", self.error_column)
        return {"type": self.error_type, "message": self.error_message, "detail": detail}

    def agents(self) -> dict[str, AgentManifest]:
        """The manifest's agents by key, in key order."""
        specs = self._agent_specs()
        return {key: AgentManifest.from_spec(key, specs[key]) for key in sorted(specs)}

    def agent(self, key: str) -> AgentManifest | None:
        """One agent of the manifest, or None."""
        specs = self._agent_specs()
        return AgentManifest.from_spec(key, specs[key]) if key in specs else None

    def _agent_specs(self) -> dict[str, Any]:
        manifest = self.manifest if isinstance(self.manifest, dict) else {}
        specs = manifest.get("agents")
        return specs if isinstance(specs, dict) else {}
