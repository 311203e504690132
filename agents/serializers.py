"""REST API v1 representations of bundles, versions, agents and tool calls."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Bundle, BundleVersion, VersionStatus
from lightfast_cloud.api_errors import ErrorSerializer
from lightfast_cloud.api_input import StrictSerializer


class BundleVersionSerializer(serializers.ModelSerializer[BundleVersion]):
    """One version: status, manifest once ready, classified error once rejected."""

    bundle = serializers.CharField(source="bundle.slug", read_only=True)
    status = serializers.ChoiceField(choices=VersionStatus.choices, read_only=True)
    is_active = serializers.SerializerMethodField()
    error = serializers.SerializerMethodField()
    bytes = serializers.IntegerField(source="size_bytes", read_only=True)

    class Meta:
        model = BundleVersion
        fields = [
            "bundle",
            "number",
            "status",
            "is_active",
            "sha256",
            "bytes",
            "manifest",
            "error",
            "created_at",
            "validated_at",
            "quarantined_at",
        ]
        read_only_fields = fields

    def get_is_active(self, version: BundleVersion) -> bool:
        """Whether the bundle runs this version."""
        return version.bundle.active_version_id == version.pk

    @extend_schema_field(ErrorSerializer(allow_null=True))
    def get_error(self, version: BundleVersion) -> dict[str, Any] | None:
        """The classified error of a rejected version, with line and column when known."""
        return version.error_dict()


class BundleSerializer(serializers.ModelSerializer[Bundle]):
    """A bundle and the number of its active version."""

    active_version = serializers.IntegerField(source="active_version.number", allow_null=True, read_only=True)

    class Meta:
        model = Bundle
        fields = ["slug", "name", "description", "active_version", "created_at"]
        read_only_fields = fields


class UploadResponseSerializer(serializers.Serializer):
    """What an upload answers: the bundle and the (new or identical existing) version."""

    bundle = BundleSerializer()
    version = BundleVersionSerializer()
    created = serializers.BooleanField(help_text="False when identical bytes were already uploaded.")


class RollbackSerializer(StrictSerializer):
    """Body of a rollback: the version to activate, or none for the previous ready one."""

    version = serializers.IntegerField(min_value=1, required=False)


class AgentSerializer(serializers.Serializer):
    """One agent of an active bundle version."""

    id = serializers.CharField(help_text="`bundle/agentKey`.")
    bundle = serializers.CharField()
    agent = serializers.CharField()
    version = serializers.IntegerField()
    name = serializers.CharField()
    system = serializers.CharField(allow_null=True)
    model = serializers.JSONField(allow_null=True)
    tools = serializers.JSONField(
        help_text="Tool name → {description, inputSchema, outputSchema, clientSide?, needsApproval?}."
    )
    dynamicTools = serializers.BooleanField()  # noqa: N815 - the manifest's own key


class ToolInvokeSerializer(StrictSerializer):
    """Body of a direct tool call."""

    agent = serializers.CharField(
        required=False, max_length=200, help_text="Agent key; optional when only one agent has the tool."
    )
    input = serializers.JSONField(required=False, default=dict)
    timeout_ms = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=3_600_000,
        help_text="Wall-clock limit, capped by the plan's per-run limit.",
    )


class ToolResultSerializer(serializers.Serializer):
    """The sandbox's answer to a tool call."""

    ok = serializers.BooleanField()
    output = serializers.JSONField(allow_null=True)
    error = ErrorSerializer(allow_null=True)
    logs = serializers.JSONField()
    usage = serializers.JSONField()


class BundleListSerializer(serializers.Serializer):
    """The organization's bundles."""

    results = BundleSerializer(many=True)


class BundleVersionListSerializer(serializers.Serializer):
    """A bundle's versions, newest first."""

    results = BundleVersionSerializer(many=True)


class AgentListSerializer(serializers.Serializer):
    """The agents of the organization's active bundle versions."""

    results = AgentSerializer(many=True)
