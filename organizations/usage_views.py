"""REST API v1: the organization's usage against its quotas, and its audit log."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiTypes, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from lightfast_cloud.api_input import query_int, query_value
from organizations.api_views import COMMON_ERRORS
from organizations.models import AuditLog
from organizations.quotas import usage_report
from organizations.selectors import audit_log_list
from organizations.tenancy import OrganizationScopedAPIView

AUDIT_PAGE_DEFAULT = 50
AUDIT_PAGE_MAX = 200
AUDIT_ID_MAX = 2**63 - 1


class UsageView(OrganizationScopedAPIView):
    """GET /api/v1/usage."""

    @extend_schema(
        summary="Usage of the current period against each quota, and daily series for 30 days",
        responses={200: OpenApiTypes.OBJECT, **COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """Each quota's used / limit / remaining / resets_at, and runs, CPU-ms and tokens per day."""
        return Response(usage_report(organization=self.organization))


class AuditEntrySerializer(serializers.ModelSerializer):
    """One audit log entry as members see it."""

    actor = serializers.SerializerMethodField()
    target = serializers.SerializerMethodField()

    class Meta:
        model = AuditLog
        fields = ["id", "created_at", "action", "actor", "target", "reason", "metadata"]

    def get_actor(self, entry: AuditLog) -> dict[str, str]:
        """Who acted: type and label (the label outlives deleted users and keys)."""
        return {"type": entry.actor_type, "label": entry.actor_label}

    def get_target(self, entry: AuditLog) -> dict[str, str]:
        """What was acted on."""
        return {"type": entry.target_type, "id": entry.target_id}


class AuditPageSerializer(serializers.Serializer):
    """A page of the audit log."""

    results = AuditEntrySerializer(many=True)
    next_before = serializers.IntegerField(allow_null=True, help_text="Pass as `before` for the next page.")


class AuditLogView(OrganizationScopedAPIView):
    """GET /api/v1/audit."""

    @extend_schema(
        summary="The organization's audit log, newest first",
        parameters=[
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": AUDIT_PAGE_MAX},
                description=f"At most {AUDIT_PAGE_MAX} (default {AUDIT_PAGE_DEFAULT}).",
            ),
            OpenApiParameter(
                "before",
                {"type": "integer", "minimum": 1, "maximum": AUDIT_ID_MAX},
                description="Only entries with a smaller id (next page).",
            ),
            OpenApiParameter("action", str, description="Only this action, e.g. `apikey.created`."),
        ],
        responses={200: AuditPageSerializer, **COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        """A page of entries; `next_before` continues it."""
        entries = audit_log_list(organization=self.organization)
        limit = query_int(request, "limit", default=AUDIT_PAGE_DEFAULT, minimum=1, maximum=AUDIT_PAGE_MAX)
        before = query_int(request, "before", default=0, minimum=1, maximum=AUDIT_ID_MAX)
        if before:
            entries = entries.filter(pk__lt=before)
        action = query_value(request, "action")
        if action:
            entries = entries.filter(action=action)
        page = list(entries.order_by("-pk")[:limit])
        body: dict[str, Any] = {
            "results": AuditEntrySerializer(page, many=True).data,
            "next_before": page[-1].pk if len(page) == limit else None,
        }
        return Response(body)
