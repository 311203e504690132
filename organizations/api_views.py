"""REST API v1 views for the caller's organization, its API keys and its members."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from lightfast_cloud.api_errors import ErrorResponseSerializer
from organizations.models import ApiKey
from organizations.selectors import apikey_list, membership_list
from organizations.serializers import (
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeyListSerializer,
    ApiKeySerializer,
    MemberListSerializer,
    MemberSerializer,
    OrganizationSerializer,
)
from organizations.services import apikey_create, apikey_revoke
from organizations.tenancy import OrganizationScopedAPIView


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


# Errors every tenant route can answer.
COMMON_ERRORS = {
    401: _error(
        "Missing, invalid, revoked or expired credentials (`not_authenticated`, `authentication_failed`)."
    ),
    403: _error(
        "Credentials lack the scope or role (`permission_denied`), or the organization is suspended "
        "(`organization_suspended`)."
    ),
}
BODY_ERRORS = {
    400: _error(
        "Malformed JSON, non-UTF-8 body, wrong types or unknown fields "
        "(`malformed_json`, `invalid_request`, `invalid_input`)."
    ),
    413: _error("Body larger than the JSON limit (`payload_too_large`)."),
    415: _error("Body is not `application/json` (`unsupported_media_type`)."),
}
NOT_FOUND = {404: _error("No such object in your organization (`not_found`).")}
KEY_ID = OpenApiParameter("key_id", str, OpenApiParameter.PATH, description="The key's `id`.")


class OrganizationView(OrganizationScopedAPIView):
    """The caller's organization."""

    @extend_schema(
        operation_id="organization_retrieve",
        responses={200: OrganizationSerializer, **COMMON_ERRORS},
        tags=["organization"],
    )
    def get(self, request: Request) -> Response:
        """The organization, its plan limits, and who the caller is."""
        return Response(OrganizationSerializer(self.organization, context={"tenant": self.tenant}).data)


class ApiKeyListView(OrganizationScopedAPIView):
    """List and create the organization's API keys."""

    @extend_schema(
        operation_id="api_keys_list",
        responses={200: ApiKeyListSerializer, **COMMON_ERRORS},
        tags=["api-keys"],
    )
    def get(self, request: Request) -> Response:
        """Every key of the organization, without secrets."""
        keys = apikey_list(organization=self.organization)
        return Response({"results": ApiKeySerializer(keys, many=True).data})

    @extend_schema(
        operation_id="api_keys_create",
        request=ApiKeyCreateSerializer,
        responses={201: ApiKeyCreatedSerializer, **COMMON_ERRORS, **BODY_ERRORS},
        tags=["api-keys"],
        description="Creates a key and returns it in `key`. The full key is never shown again. "
        "Needs the write scope; a key can only create keys with scopes it has itself.",
    )
    def post(self, request: Request) -> Response:
        """Create a key; the response is the only place its secret ever appears."""
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        days = serializer.validated_data.get("expires_in_days")
        api_key, raw_key = apikey_create(
            organization=self.organization,
            name=serializer.validated_data["name"],
            scopes=serializer.validated_data["scopes"],
            expires_at=timezone.now() + timedelta(days=days) if days else None,
            actor=self.tenant.actor,
        )
        body = ApiKeyCreatedSerializer(api_key, context={"raw_key": raw_key}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})


class ApiKeyDetailView(OrganizationScopedAPIView):
    """One API key: read it (never its secret) or revoke it."""

    def _get_key(self, key_id: str) -> ApiKey:
        return self.get_scoped_object_or_404(ApiKey.objects.select_related("created_by"), lookup_id=key_id)

    @extend_schema(
        operation_id="api_keys_retrieve",
        parameters=[KEY_ID],
        responses={200: ApiKeySerializer, **COMMON_ERRORS, **NOT_FOUND},
        tags=["api-keys"],
    )
    def get(self, request: Request, key_id: str) -> Response:
        """The key's metadata."""
        return Response(ApiKeySerializer(self._get_key(key_id)).data)

    @extend_schema(
        operation_id="api_keys_revoke",
        parameters=[KEY_ID],
        request=None,
        responses={200: ApiKeySerializer, **COMMON_ERRORS, **NOT_FOUND},
        tags=["api-keys"],
        description="Revokes the key at once; later requests with it get 401. Revoking twice is "
        "harmless. Needs the write scope.",
    )
    def delete(self, request: Request, key_id: str) -> Response:
        """Revoke the key."""
        api_key = apikey_revoke(api_key=self._get_key(key_id), actor=self.tenant.actor)
        return Response(ApiKeySerializer(api_key).data)


class MemberListView(OrganizationScopedAPIView):
    """The organization's members."""

    @extend_schema(
        operation_id="members_list", responses={200: MemberListSerializer, **COMMON_ERRORS}, tags=["members"]
    )
    def get(self, request: Request) -> Response:
        """Every member with their role."""
        members = membership_list(organization=self.organization)
        return Response({"results": MemberSerializer(members, many=True).data})
