"""REST API v1 representations of tenancy objects."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from lightfast_cloud.api_input import StrictSerializer
from organizations.models import (
    API_KEY_STATUSES,
    AllowedOrigin,
    ApiKey,
    EgressAllowedHost,
    Membership,
    ModelProviderConfig,
    Organization,
    OrganizationVariable,
    Role,
    Scope,
)


class OrganizationLimitsSerializer(serializers.ModelSerializer[Organization]):
    """The organization's plan limits."""

    class Meta:
        model = Organization
        fields = list(Organization.LIMIT_FIELDS)
        read_only_fields = fields


class CallerSerializer(serializers.Serializer):
    """Who is calling: an API key with its scopes, or a member with a role."""

    type = serializers.ChoiceField(choices=["api_key", "user"])
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices))
    api_key_id = serializers.CharField(allow_null=True)
    role = serializers.ChoiceField(choices=Role.choices, allow_null=True)


class OrganizationSerializer(serializers.ModelSerializer[Organization]):
    """The caller's organization."""

    id = serializers.CharField(source="public_id", read_only=True)
    limits = serializers.SerializerMethodField()
    caller = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ["id", "slug", "name", "is_active", "created_at", "limits", "caller"]
        read_only_fields = fields

    @extend_schema_field(OrganizationLimitsSerializer)
    def get_limits(self, organization: Organization) -> dict[str, Any]:
        return OrganizationLimitsSerializer(organization).data

    @extend_schema_field(CallerSerializer)
    def get_caller(self, organization: Organization) -> dict[str, Any]:
        tenant = self.context["tenant"]
        return {
            "type": "api_key" if tenant.api_key else "user",
            "scopes": [scope for scope in Scope.values if scope in tenant.scopes],
            "api_key_id": tenant.api_key.lookup_id if tenant.api_key else None,
            "role": tenant.membership.role if tenant.membership else None,
        }


class ApiKeySerializer(serializers.ModelSerializer[ApiKey]):
    """An API key as listed: never its secret or hash."""

    id = serializers.CharField(source="lookup_id", read_only=True)
    prefix = serializers.CharField(source="display_prefix", read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=Scope.choices), read_only=True)
    status = serializers.ChoiceField(choices=API_KEY_STATUSES, read_only=True)
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "scopes",
            "status",
            "created_at",
            "created_by",
            "last_used_at",
            "expires_at",
            "revoked_at",
        ]
        read_only_fields = fields

    def get_created_by(self, api_key: ApiKey) -> str | None:
        return api_key.created_by.get_username() if api_key.created_by else None


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A newly created key: the only response that ever contains the full key."""

    key = serializers.SerializerMethodField(help_text="The full API key. Shown once; store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    def get_key(self, api_key: ApiKey) -> str:
        return str(self.context["raw_key"])


class ApiKeyCreateSerializer(StrictSerializer):
    """Input for creating an API key."""

    name = serializers.CharField(max_length=100, allow_blank=True, default="")
    scopes = serializers.ListField(
        child=serializers.ChoiceField(choices=Scope.choices),
        min_length=1,
        max_length=3,
        help_text="Any of read, write, execute.",
    )
    expires_in_days = serializers.IntegerField(
        min_value=1,
        max_value=3650,
        required=False,
        allow_null=True,
        help_text="Omit for a key that does not expire.",
    )


class ApiKeyListSerializer(serializers.Serializer):
    """A page of API keys."""

    results = ApiKeySerializer(many=True)


class MemberSerializer(serializers.ModelSerializer[Membership]):
    """A member of the organization."""

    email = serializers.EmailField(source="user.email", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    name = serializers.SerializerMethodField()
    joined_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = Membership
        fields = ["username", "email", "name", "role", "joined_at"]
        read_only_fields = fields

    def get_name(self, membership: Membership) -> str:
        return membership.user.get_full_name()


class MemberListSerializer(serializers.Serializer):
    """The organization's members."""

    results = MemberSerializer(many=True)


class VariableSerializer(serializers.ModelSerializer[OrganizationVariable]):
    """A variable as listed: a secret's value is never returned (`value` is null)."""

    value = serializers.SerializerMethodField(
        method_name="get_shown_value", help_text="The value of a plain variable; null for a secret."
    )
    inject_hosts = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = OrganizationVariable
        fields = [
            "key",
            "is_secret",
            "value",
            "inject_header",
            "inject_prefix",
            "inject_hosts",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_shown_value(self, variable: OrganizationVariable) -> str | None:
        return None if variable.is_secret else variable.value


class VariableListSerializer(serializers.Serializer):
    """The organization's variables and secrets."""

    results = VariableSerializer(many=True)


class VariableWriteSerializer(StrictSerializer):
    """Input for creating or replacing a variable (PUT)."""

    value = serializers.CharField(
        allow_blank=True,
        allow_null=True,
        required=False,
        trim_whitespace=False,
        help_text="Required, except to keep a stored secret's value (same header, the same hosts or fewer).",
    )
    is_secret = serializers.BooleanField(
        default=False, help_text="Secrets never enter the sandbox and are never shown again."
    )
    inject_header = serializers.CharField(
        allow_blank=True, default="", max_length=100, help_text="Secrets: the header the host adds."
    )
    inject_prefix = serializers.CharField(
        allow_blank=True, default="", max_length=50, trim_whitespace=False, help_text='e.g. "Bearer ".'
    )
    inject_hosts = serializers.ListField(
        child=serializers.CharField(max_length=253),
        default=list,
        max_length=100,
        help_text="Secrets: hosts (exact or *.domain, optionally :port) whose https requests get the header; "
        "port 443 unless one is named.",
    )


class AllowedOriginSerializer(serializers.ModelSerializer[AllowedOrigin]):
    """A browser origin whose pages may call the API and the chat endpoints (CORS)."""

    class Meta:
        model = AllowedOrigin
        fields = ["id", "origin", "created_at"]
        read_only_fields = fields


class AllowedOriginListSerializer(serializers.Serializer):
    """The organization's allowed browser origins."""

    results = AllowedOriginSerializer(many=True)


class AllowedOriginCreateSerializer(StrictSerializer):
    """Input for allowing a browser origin."""

    origin = serializers.CharField(
        max_length=300, help_text="`https://app.example.com` (http only for localhost); no path, no wildcard."
    )


class EgressHostSerializer(serializers.ModelSerializer[EgressAllowedHost]):
    """A host the organization's sandbox code may fetch from."""

    class Meta:
        model = EgressAllowedHost
        fields = ["pattern", "created_at"]
        read_only_fields = fields


class EgressHostListSerializer(serializers.Serializer):
    """The organization's egress allow list (everything else is denied)."""

    results = EgressHostSerializer(many=True)


class EgressHostCreateSerializer(StrictSerializer):
    """Input for allowing a host."""

    pattern = serializers.CharField(max_length=253, help_text="`api.example.com` or `*.example.com`.")


class ModelProviderSerializer(serializers.ModelSerializer[ModelProviderConfig]):
    """The organization's model provider settings, without the API key."""

    has_api_key = serializers.BooleanField(read_only=True)
    updated_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the settings last changed; null when never set."
    )

    class Meta:
        model = ModelProviderConfig
        fields = ["base_url", "model_map", "has_api_key", "updated_at"]
        read_only_fields = fields


class ModelProviderWriteSerializer(StrictSerializer):
    """Input for the organization's model provider."""

    base_url = serializers.CharField(
        allow_blank=True, default="", max_length=500, help_text="OpenAI-compatible base URL."
    )
    api_key = serializers.CharField(
        allow_blank=True,
        required=False,
        write_only=True,
        trim_whitespace=False,
        max_length=1000,
        help_text="Write-only. Omit to keep the key (dropped if base_url changes); blank removes it.",
    )
    model_map = serializers.DictField(child=serializers.CharField(max_length=200), default=dict)
