"""Writes to tenancy data, by subject: organizations, memberships, API keys, sandbox and model settings;
each recorded in the audit log (`audit`)."""

from organizations.services.api_keys import (
    apikey_authenticate,
    apikey_create,
    apikey_mark_used,
    apikey_parse_scopes,
    apikey_revoke,
)
from organizations.services.audit import (
    Actor,
    audit_record,
    credentials_changed,
    credentials_changed_on_commit,
)
from organizations.services.memberships import membership_add, membership_change_role, membership_remove
from organizations.services.organizations import (
    org_create,
    org_update_limits,
    organization_set_sandbox_backend,
    user_get_or_create_by_email,
)
from organizations.services.sandbox_settings import (
    FORBIDDEN_INJECT_HEADERS,
    MAX_EGRESS_HOSTS,
    MAX_INJECT_HOSTS,
    MAX_MODEL_MAP_ENTRIES,
    MAX_VARIABLE_VALUE_BYTES,
    MAX_VARIABLES,
    VariableFields,
    egress_host_add,
    egress_host_clean,
    egress_host_remove,
    model_map_clean,
    model_provider_clean,
    model_provider_clear,
    model_provider_set,
    variable_clean,
    variable_delete,
    variable_set,
)

__all__ = [
    "Actor",
    "FORBIDDEN_INJECT_HEADERS",
    "MAX_EGRESS_HOSTS",
    "MAX_INJECT_HOSTS",
    "MAX_MODEL_MAP_ENTRIES",
    "MAX_VARIABLES",
    "MAX_VARIABLE_VALUE_BYTES",
    "VariableFields",
    "apikey_authenticate",
    "apikey_create",
    "apikey_mark_used",
    "apikey_parse_scopes",
    "apikey_revoke",
    "audit_record",
    "credentials_changed",
    "credentials_changed_on_commit",
    "egress_host_add",
    "egress_host_clean",
    "egress_host_remove",
    "membership_add",
    "membership_change_role",
    "membership_remove",
    "model_map_clean",
    "model_provider_clean",
    "model_provider_clear",
    "model_provider_set",
    "org_create",
    "org_update_limits",
    "organization_set_sandbox_backend",
    "user_get_or_create_by_email",
    "variable_clean",
    "variable_delete",
    "variable_set",
]
