"""REST API v1 views for the caller's organization, its API keys and its members."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from lightfast_cloud.api_errors import ErrorResponseSerializer
from organizations.errors import SettingInvalid
from organizations.models import (
    AllowedOrigin,
    ApiKey,
    EgressAllowedHost,
    ModelProviderConfig,
    OrganizationVariable,
)
from organizations.selectors import (
    allowed_origin_list,
    apikey_list,
    egress_host_list,
    membership_list,
    variable_list,
)
from organizations.serializers import (
    AllowedOriginCreateSerializer,
    AllowedOriginListSerializer,
    AllowedOriginSerializer,
    ApiKeyCreatedSerializer,
    ApiKeyCreateSerializer,
    ApiKeyListSerializer,
    ApiKeySerializer,
    EgressHostCreateSerializer,
    EgressHostListSerializer,
    EgressHostSerializer,
    MemberListSerializer,
    MemberSerializer,
    ModelProviderSerializer,
    ModelProviderWriteSerializer,
    OrganizationSerializer,
    VariableListSerializer,
    VariableSerializer,
    VariableWriteSerializer,
)
from organizations.services import (
    allowed_origin_add,
    allowed_origin_remove,
    apikey_create,
    apikey_revoke,
    egress_host_add,
    egress_host_clean,
    egress_host_remove,
    model_provider_clear,
    model_provider_set,
    variable_delete,
    variable_set,
)
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
        "Needs the write scope. A key never outranks its creator: its scopes are within the calling "
        "key's scopes or member's role (else 403 `scope_escalation`), and a key created by an expiring "
        "key needs `expires_in_days` ending no later than it (else 403 `expiry_escalation`).",
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
            creator_scopes=self.tenant.scopes,
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


# Responses about settings that can hold secrets are never cached anywhere.
NO_STORE = {"Cache-Control": "no-store"}
VARIABLE_KEY = OpenApiParameter("key", str, OpenApiParameter.PATH, description="The variable's key.")
HOST_PATTERN = OpenApiParameter("pattern", str, OpenApiParameter.PATH, description="An allowed host.")
SETTING_ERRORS = {409: _error("A limit on the number of settings was reached (`quota_exceeded`).")}


class VariableListView(OrganizationScopedAPIView):
    """The organization's variables (`process.env` in the sandbox) and secrets (host-injected headers)."""

    @extend_schema(
        operation_id="variables_list",
        responses={200: VariableListSerializer, **COMMON_ERRORS},
        tags=["variables"],
    )
    def get(self, request: Request) -> Response:
        """Every variable and secret; secrets with `value: null`."""
        variables = variable_list(organization=self.organization)
        return Response({"results": VariableSerializer(variables, many=True).data}, headers=NO_STORE)


class VariableDetailView(OrganizationScopedAPIView):
    """One variable or secret: read it (never a secret's value), create or replace it, delete it."""

    def _get_variable(self, key: str) -> OrganizationVariable:
        return self.get_scoped_object_or_404(OrganizationVariable, key=key)

    @extend_schema(
        operation_id="variables_retrieve",
        parameters=[VARIABLE_KEY],
        responses={200: VariableSerializer, **COMMON_ERRORS, **NOT_FOUND},
        tags=["variables"],
    )
    def get(self, request: Request, key: str) -> Response:
        """The variable; a secret's value is null."""
        return Response(VariableSerializer(self._get_variable(key)).data, headers=NO_STORE)

    @extend_schema(
        operation_id="variables_put",
        parameters=[VARIABLE_KEY],
        request=VariableWriteSerializer,
        responses={
            200: VariableSerializer,
            201: VariableSerializer,
            **COMMON_ERRORS,
            **BODY_ERRORS,
            **SETTING_ERRORS,
        },
        tags=["variables"],
        description="Creates or replaces the variable. A plain variable is visible to bundles as "
        "`process.env.KEY`. A secret (`is_secret: true`) never enters the sandbox: the platform adds "
        "`inject_header: inject_prefix + value` to fetch requests to `inject_hosts` (which must also be "
        "allowed under /egress/hosts), over https only and to port 443 unless the inject host names a port "
        "(`api.example.com:8443`). A stored secret's value can be kept (`value: null`) only while its "
        "header stays and its hosts stay or shrink. A secret's value is never returned. "
        "Needs the write scope.",
    )
    def put(self, request: Request, key: str) -> Response:
        """Create or replace the variable."""
        serializer = VariableWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        variable, created = variable_set(
            organization=self.organization,
            key=key,
            value=data.get("value"),
            is_secret=data["is_secret"],
            inject_header=data["inject_header"],
            inject_prefix=data["inject_prefix"],
            inject_hosts=data["inject_hosts"],
            actor=self.tenant.actor,
        )
        return Response(
            VariableSerializer(variable).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
            headers=NO_STORE,
        )

    @extend_schema(
        operation_id="variables_delete",
        parameters=[VARIABLE_KEY],
        request=None,
        responses={204: None, **COMMON_ERRORS, **NOT_FOUND},
        tags=["variables"],
    )
    def delete(self, request: Request, key: str) -> Response:
        """Delete the variable or secret."""
        variable_delete(variable=self._get_variable(key), actor=self.tenant.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class EgressHostListView(OrganizationScopedAPIView):
    """The hosts the organization's sandbox code may fetch from; everything else is denied."""

    @extend_schema(
        operation_id="egress_hosts_list",
        responses={200: EgressHostListSerializer, **COMMON_ERRORS},
        tags=["egress"],
    )
    def get(self, request: Request) -> Response:
        """The allow list."""
        hosts = egress_host_list(organization=self.organization)
        return Response({"results": EgressHostSerializer(hosts, many=True).data})

    @extend_schema(
        operation_id="egress_hosts_add",
        request=EgressHostCreateSerializer,
        responses={
            200: EgressHostSerializer,
            201: EgressHostSerializer,
            **COMMON_ERRORS,
            **BODY_ERRORS,
            **SETTING_ERRORS,
        },
        tags=["egress"],
        description="Allows `api.example.com` (that host only) or `*.example.com` (its subdomains). "
        "Refused: `*`, whole top-level domains, non-public IP addresses, localhost, ports and URLs. "
        "Names are checked again after DNS resolution on every request. Needs the write scope.",
    )
    def post(self, request: Request) -> Response:
        """Allow a host; 200 when it was already allowed."""
        serializer = EgressHostCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host, created = egress_host_add(
            organization=self.organization,
            pattern=serializer.validated_data["pattern"],
            actor=self.tenant.actor,
        )
        return Response(
            EgressHostSerializer(host).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class EgressHostDetailView(OrganizationScopedAPIView):
    """One allowed host."""

    @extend_schema(
        operation_id="egress_hosts_remove",
        parameters=[HOST_PATTERN],
        request=None,
        responses={204: None, **COMMON_ERRORS, **NOT_FOUND},
        tags=["egress"],
    )
    def delete(self, request: Request, pattern: str) -> Response:
        """Stop allowing the host."""
        try:
            cleaned = egress_host_clean(pattern=pattern)
        except SettingInvalid as exc:
            raise Http404("No such allowed host.") from exc
        host = self.get_scoped_object_or_404(EgressAllowedHost, pattern=cleaned)
        egress_host_remove(host=host, actor=self.tenant.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AllowedOriginListView(OrganizationScopedAPIView):
    """The browser origins whose pages may call the API and the chat endpoints directly (CORS)."""

    @extend_schema(
        operation_id="allowed_origins_list",
        summary="List the allowed browser origins",
        responses={200: AllowedOriginListSerializer, **COMMON_ERRORS},
        tags=["organization"],
    )
    def get(self, request: Request) -> Response:
        """The allowed origins."""
        origins = allowed_origin_list(organization=self.organization)
        return Response({"results": AllowedOriginSerializer(origins, many=True).data})

    @extend_schema(
        operation_id="allowed_origins_add",
        summary="Allow a browser origin",
        request=AllowedOriginCreateSerializer,
        responses={
            200: AllowedOriginSerializer,
            201: AllowedOriginSerializer,
            **COMMON_ERRORS,
            **BODY_ERRORS,
            **SETTING_ERRORS,
        },
        tags=["organization"],
        description="Pages on this origin may call the API with a client token (`/client-tokens`): "
        "preflights are answered and responses carry `Access-Control-Allow-Origin`. Exact origins "
        "only (`https://app.example.com`; http only for localhost). Needs the write scope.",
    )
    def post(self, request: Request) -> Response:
        """Allow an origin; 200 when it was already allowed."""
        serializer = AllowedOriginCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        allowed, created = allowed_origin_add(
            organization=self.organization,
            origin=serializer.validated_data["origin"],
            actor=self.tenant.actor,
        )
        return Response(
            AllowedOriginSerializer(allowed).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class AllowedOriginDetailView(OrganizationScopedAPIView):
    """One allowed browser origin."""

    @extend_schema(
        operation_id="allowed_origins_remove",
        summary="Stop allowing a browser origin",
        parameters=[
            OpenApiParameter("origin_id", int, OpenApiParameter.PATH, description="The origin's id.")
        ],
        request=None,
        responses={204: None, **COMMON_ERRORS, **NOT_FOUND},
        tags=["organization"],
    )
    def delete(self, request: Request, origin_id: int) -> Response:
        """Stop allowing the origin."""
        allowed = self.get_scoped_object_or_404(AllowedOrigin, pk=origin_id)
        allowed_origin_remove(allowed=allowed, actor=self.tenant.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ModelProviderView(OrganizationScopedAPIView):
    """The organization's own OpenAI-compatible model provider (its API key is write-only)."""

    def _body(self) -> dict[str, Any]:
        config = ModelProviderConfig.objects.filter(organization=self.organization).first()
        if config is None:
            return {"base_url": "", "model_map": {}, "has_api_key": False, "updated_at": None}
        return dict(ModelProviderSerializer(config).data)

    @extend_schema(
        operation_id="model_provider_retrieve",
        responses={200: ModelProviderSerializer, **COMMON_ERRORS},
        tags=["model-provider"],
    )
    def get(self, request: Request) -> Response:
        """The provider settings; blank `base_url` means the platform's provider."""
        return Response(self._body(), headers=NO_STORE)

    @extend_schema(
        operation_id="model_provider_put",
        request=ModelProviderWriteSerializer,
        responses={200: ModelProviderSerializer, **COMMON_ERRORS, **BODY_ERRORS},
        tags=["model-provider"],
        description="With `base_url`, this organization's runs use that OpenAI-compatible endpoint, "
        "`api_key` and `model_map` (bundle model id to provider model id, `*` for the rest) instead of "
        "the platform's. Without it, `model_map` is laid over the platform's map. Changing `base_url` "
        "without a new `api_key` drops the stored key. Needs the write scope.",
    )
    def put(self, request: Request) -> Response:
        """Set the provider."""
        serializer = ModelProviderWriteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        model_provider_set(
            organization=self.organization,
            base_url=data["base_url"],
            api_key=data.get("api_key"),
            model_map=data["model_map"],
            actor=self.tenant.actor,
        )
        return Response(self._body(), headers=NO_STORE)

    @extend_schema(
        operation_id="model_provider_clear",
        request=None,
        responses={204: None, **COMMON_ERRORS},
        tags=["model-provider"],
    )
    def delete(self, request: Request) -> Response:
        """Go back to the platform's provider; the stored key is deleted."""
        model_provider_clear(organization=self.organization, actor=self.tenant.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)
