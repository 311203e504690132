"""Errors of the tenancy writes (organizations, members, API keys, sandbox settings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lightfast_cloud.errors import LightfastError

if TYPE_CHECKING:
    pass


class TenancyError(LightfastError):
    """A tenancy write that cannot be done as asked."""

    code = "invalid_input"


class OrganizationSlugTaken(TenancyError):
    code = "conflict"


class AccountExists(TenancyError):
    code = "conflict"
    default_message = "An account with this email already exists."


class InvitationUnusable(TenancyError):
    """An invitation link that is unknown, used, revoked, expired or for someone else."""

    code = "not_found"
    default_message = "This invitation link does not work (unknown, used, revoked or expired)."


class RoleEscalation(TenancyError):
    code = "permission_denied"
    default_message = "Only owners can make someone an owner, or change or remove an owner."


class InvalidScopes(TenancyError):
    default_message = "Scopes must be a non-empty subset of read, write, execute."


class ScopeEscalation(TenancyError):
    code = "scope_escalation"
    default_message = "A key can only have scopes its creator has (an API key's scopes or a member's role)."


class ExpiryEscalation(TenancyError):
    code = "expiry_escalation"
    default_message = "A key created by an expiring key must expire no later than the key that creates it."


class LastOwner(TenancyError):
    code = "conflict"
    default_message = "An organization must keep at least one owner."


class ApiKeyRejected(LightfastError):
    """The presented API key does not authenticate; the message says why without revealing other keys."""

    code = "authentication_failed"
    default_message = "Invalid API key."


class SettingInvalid(TenancyError):
    """A variable, secret, egress host or provider setting that cannot be stored as given."""

    code = "invalid_input"


class SettingLimitReached(TenancyError):
    """A count limit of stored settings (variables, hosts): answered 409, unlike a usage quota's 403."""

    code = "quota_exceeded"
    http_status_override = 409


class SettingConflict(TenancyError):
    code = "conflict"
    default_message = "Another request changed this setting at the same time; try again."
