"""Tenancy: organizations with plan limits, memberships, hashed API keys and the audit log."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# Lowercase letters and digits only: ids and key prefixes never contain "_",
# so "lf_live_<prefix>_<secret>" splits unambiguously.
PUBLIC_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
API_KEY_PREFIX = "lf_live_"
API_KEY_LOOKUP_LENGTH = 12
# last_used_at is written at most this often per key, so authentication is
# normally read-only.
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)

MIB = 1024 * 1024


def random_token(length: int) -> str:
    """A random string of lowercase letters and digits (about 5.2 bits per character)."""
    return "".join(secrets.choice(PUBLIC_ID_ALPHABET) for _ in range(length))


def new_organization_public_id() -> str:
    """A stable, non-enumerable organization id such as `org_3k9x…`."""
    return f"org_{random_token(16)}"


def api_key_hash(raw_key: str) -> str:
    """SHA-256 of the full key; enough for a 256-bit random secret (no password stretching needed)."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


class SandboxBackend(models.TextChoices):
    LOCAL = "local", "Local process jail"
    DOCKER = "docker", "Docker containers"


class Organization(models.Model):
    """A tenant: owns members, API keys, bundles and runs, and carries its plan limits."""

    public_id = models.CharField(
        max_length=32, unique=True, default=new_organization_public_id, editable=False
    )
    slug = models.SlugField(
        max_length=50,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$", "Lowercase letters, digits and inner hyphens only."
            )
        ],
    )
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(
        default=True, help_text="Suspended organizations are refused on every API call and websocket."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    # --- plan limits (organizations.quotas and organizations.ratelimits enforce them) ---
    api_rate = models.CharField(
        max_length=20,
        default="600/m",
        validators=[RegexValidator(r"^[1-9][0-9]*/[0-9]*[smhd]$", "A rate such as 600/m, 10/s or 5000/h.")],
        help_text="API requests per period, e.g. 600/m.",
    )
    runs_per_month = models.PositiveIntegerField(default=10_000)
    concurrent_runs = models.PositiveIntegerField(default=10)
    sandbox_cpu_ms_per_month = models.PositiveBigIntegerField(default=3_600_000)
    model_tokens_per_month = models.PositiveBigIntegerField(default=5_000_000)
    bundle_storage_bytes = models.PositiveBigIntegerField(default=500 * MIB)
    max_bundle_bytes = models.PositiveBigIntegerField(default=10 * MIB)
    run_cpu_ms = models.PositiveIntegerField(default=10_000, help_text="Sandbox CPU per run.")
    run_memory_bytes = models.PositiveBigIntegerField(default=128 * MIB, help_text="Sandbox memory per run.")
    run_wall_ms = models.PositiveIntegerField(default=300_000, help_text="Wall-clock time per run.")
    sandbox_backend = models.CharField(
        max_length=10,
        choices=SandboxBackend.choices,
        blank=True,
        default="",
        help_text="Where this organization's JavaScript runs; blank uses the platform's setting.",
    )

    LIMIT_FIELDS = (
        "api_rate",
        "runs_per_month",
        "concurrent_runs",
        "sandbox_cpu_ms_per_month",
        "model_tokens_per_month",
        "bundle_storage_bytes",
        "max_bundle_bytes",
        "run_cpu_ms",
        "run_memory_bytes",
        "run_wall_ms",
    )

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    def limits(self) -> dict[str, Any]:
        """The plan limits as a dict, keyed by field name."""
        return {name: getattr(self, name) for name in self.LIMIT_FIELDS}

    @property
    def connections_group(self) -> str:
        """Channel-layer group of every live connection of the organization (told when it is suspended)."""
        return f"credentials.organization.{self.pk}"


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Scope(models.TextChoices):
    READ = "read", "Read"
    WRITE = "write", "Write"
    EXECUTE = "execute", "Execute"


# What a dashboard user of each role may do, in API-key scope terms.
ROLE_SCOPES: dict[str, frozenset[str]] = {
    Role.OWNER: frozenset({Scope.READ, Scope.WRITE, Scope.EXECUTE}),
    Role.ADMIN: frozenset({Scope.READ, Scope.WRITE, Scope.EXECUTE}),
    Role.MEMBER: frozenset({Scope.READ, Scope.EXECUTE}),
    Role.VIEWER: frozenset({Scope.READ}),
}


class Membership(models.Model):
    """A user's role in one organization."""

    # A foreign key whose column leads a composite index or unique constraint has no index of its own
    # (here and below; why: execution/models.py, ChatSession).
    organization = models.ForeignKey(  # indexed by `membership_unique_user`
        Organization, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "user"], name="membership_unique_user")
        ]
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.user} in {self.organization} ({self.role})"

    @property
    def scopes(self) -> frozenset[str]:
        """The API scopes this role grants."""
        return ROLE_SCOPES[self.role]

    @property
    def connections_group(self) -> str:
        """Channel-layer group of the live connections opened with this membership (a dashboard session)."""
        return f"credentials.membership.{self.pk}"


class ApiKey(models.Model):
    """An organization's API key; only its SHA-256 is stored, the secret is shown once at creation."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    # Public part of the key: "lf_live_<lookup_id>_<secret>". Used as the key's id in the API.
    lookup_id = models.CharField(max_length=API_KEY_LOOKUP_LENGTH, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.display_prefix} ({self.name or 'unnamed'})"

    @property
    def display_prefix(self) -> str:
        """What the UI shows for the key: enough to recognise it, useless to authenticate."""
        return f"{API_KEY_PREFIX}{self.lookup_id}_…"

    @property
    def connections_group(self) -> str:
        """Channel-layer group of the live connections opened with this key (told when it is revoked)."""
        return f"credentials.apikey.{self.pk}"

    def is_expired(self, now: datetime | None = None) -> bool:
        """True once expires_at has passed."""
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def status(self) -> str:
        """`active`, `revoked` or `expired`."""
        if self.revoked_at is not None:
            return "revoked"
        if self.is_expired():
            return "expired"
        return "active"


API_KEY_STATUSES = ("active", "revoked", "expired")


class ActorType(models.TextChoices):
    USER = "user", "User"
    API_KEY = "api_key", "API key"
    OPERATOR = "operator", "Operator"
    SYSTEM = "system", "System"


class AuditLogEntryImmutable(Exception):
    """Raised on any attempt to change or delete a written audit log entry."""


class AuditLog(models.Model):
    """One recorded action: who did what to which object in which organization, and why."""

    organization = models.ForeignKey(  # indexed by `auditlog_org_created`
        Organization,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_log",
        db_index=False,
    )
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept as text so the entry still says who acted after the user or key is deleted.
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    reason = models.TextField(blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["organization", "-created_at"], name="auditlog_org_created")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Insert only: an audit entry is never rewritten."""
        if not self._state.adding:
            raise AuditLogEntryImmutable("audit log entries cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Refused: an audit entry is never deleted one by one."""
        raise AuditLogEntryImmutable("audit log entries cannot be deleted")


# --- sandbox and model settings ---------------------------------------------

VARIABLE_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"


class OrganizationVariable(models.Model):
    """A named value for the organization's sandbox calls.

    Plain variables are `process.env` inside the sandbox. Secrets never enter the sandbox:
    the host adds them as the header `inject_header: inject_prefix + value` to fetch requests
    whose host matches `inject_hosts`, over https only and to port 443 unless the pattern names
    one (`api.example.com:8443`). A secret's value is stored encrypted and never shown again
    after it is written; sending it to a new host or in another header needs the value again.
    """

    organization = models.ForeignKey(  # indexed by `variable_unique_key`
        Organization, on_delete=models.CASCADE, related_name="variables", db_index=False
    )
    key = models.CharField(
        max_length=128,
        validators=[RegexValidator(VARIABLE_KEY_PATTERN, "Letters, digits and _; not a digit first.")],
    )
    is_secret = models.BooleanField(default=False)
    # Plain variables only; "" for secrets.
    value = models.TextField(blank=True, default="")
    # Secrets only: a Fernet token (organizations.encryption); "" for plain variables.
    secret_token = models.TextField(blank=True, default="", editable=False)
    inject_header = models.CharField(
        max_length=100,
        blank=True,
        default="",
        validators=[RegexValidator(HEADER_NAME_PATTERN, "A valid HTTP header name.")],
        help_text="Secrets: the header the host adds, e.g. Authorization.",
    )
    inject_prefix = models.CharField(
        max_length=50, blank=True, default="", help_text='Secrets: text before the value, e.g. "Bearer ".'
    )
    inject_hosts = models.JSONField(
        default=list, blank=True, help_text="Secrets: hosts (exact or *.domain) that get the header."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "key"], name="variable_unique_key")]
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({'secret' if self.is_secret else 'variable'})"


class EgressAllowedHost(models.Model):
    """A host (exact or `*.domain`) the organization's sandbox code may fetch from."""

    organization = models.ForeignKey(  # indexed by `egress_host_unique_pattern`
        Organization, on_delete=models.CASCADE, related_name="egress_hosts", db_index=False
    )
    pattern = models.CharField(max_length=253)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "pattern"], name="egress_host_unique_pattern")
        ]
        ordering = ["pattern"]
        verbose_name = "egress allowed host"

    def __str__(self) -> str:
        return self.pattern


class AllowedOrigin(models.Model):
    """A browser origin (`https://app.example.com`) whose pages may call the API and chat endpoints (CORS)."""

    organization = models.ForeignKey(  # indexed by `allowed_origin_unique_origin`
        Organization, on_delete=models.CASCADE, related_name="allowed_origins", db_index=False
    )
    origin = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organization", "origin"], name="allowed_origin_unique_origin")
        ]
        ordering = ["origin"]
        verbose_name = "allowed browser origin"

    def __str__(self) -> str:
        return self.origin


class ModelProviderConfig(models.Model):
    """The organization's own OpenAI-compatible model provider, overriding the platform's."""

    organization = models.OneToOneField(Organization, on_delete=models.CASCADE, related_name="model_provider")
    base_url = models.CharField(
        max_length=500, blank=True, default="", help_text="Blank: the platform's provider."
    )
    # Fernet token of the provider API key (organizations.encryption); never shown after it is written.
    api_key_token = models.TextField(blank=True, default="", editable=False)
    model_map = models.JSONField(
        default=dict,
        blank=True,
        help_text='Bundle model id to provider model id, e.g. {"openai/gpt-4o-mini": "gpt-4o-mini"}.',
    )
    updated_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        verbose_name = "model provider"

    def __str__(self) -> str:
        return self.base_url or "platform provider"

    @property
    def has_api_key(self) -> bool:
        """Whether an API key is stored (its value is never shown)."""
        return bool(self.api_key_token)


class OrganizationUsage(models.Model):
    """Counters that are not per period: the organization's concurrent-run slots in use."""

    organization = models.OneToOneField(
        Organization, primary_key=True, on_delete=models.CASCADE, related_name="usage"
    )
    # Taken by run_start (conditional UPDATE below the limit), given back in the same
    # transaction as the run's terminal status update (organizations/quotas.py).
    active_runs = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "organization usage"
        verbose_name_plural = "organization usage"

    def __str__(self) -> str:
        return f"usage of {self.organization_id}"


class MonthlyUsage(models.Model):
    """An organization's metered usage in one calendar month (UTC)."""

    organization = models.ForeignKey(  # indexed by `monthlyusage_unique_period`
        Organization, on_delete=models.CASCADE, related_name="monthly_usage", db_index=False
    )
    period_start = models.DateField(help_text="First day of the month (UTC).")
    runs = models.PositiveIntegerField(default=0)
    sandbox_cpu_ms = models.PositiveBigIntegerField(default=0)
    model_tokens = models.PositiveBigIntegerField(default=0)
    reset_at = models.DateTimeField(
        null=True, blank=True, help_text="When an operator last reset this period's counters."
    )

    class Meta:
        ordering = ["organization_id", "-period_start"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "period_start"], name="monthlyusage_unique_period"
            )
        ]
        verbose_name_plural = "monthly usage"

    def __str__(self) -> str:
        return f"{self.organization_id} {self.period_start:%Y-%m}"


INVITATION_STATUSES = ("pending", "accepted", "revoked", "expired")


class Invitation(models.Model):
    """A link that makes whoever accepts it a member with `role`; only its SHA-256 is stored, the link is
    shown once at creation. Used once; `email`, when set, is the only account that may accept it."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="invitations")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    email = models.EmailField(blank=True, help_text="When set, only the account with this email may accept.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField()
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    accepted_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"invitation to {self.organization_id} as {self.role} ({self.status})"

    @property
    def status(self) -> str:
        """`pending`, `accepted`, `revoked` or `expired`."""
        if self.accepted_at is not None:
            return "accepted"
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= timezone.now():
            return "expired"
        return "pending"
