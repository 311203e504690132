"""REST API v1 views of bundles, versions, agents and direct tool calls; thin wrappers over services."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from agents.errors import InvalidUpload
from agents.models import Bundle, BundleVersion, VersionStatus
from agents.selectors import agent_list, bundle_get, bundle_list, version_get, version_list, version_wait
from agents.serializers import (
    AgentListSerializer,
    AgentSerializer,
    BundleListSerializer,
    BundleSerializer,
    BundleVersionListSerializer,
    BundleVersionSerializer,
    RollbackSerializer,
    ToolInvokeSerializer,
    ToolResultSerializer,
    UploadResponseSerializer,
)
from agents.services import (
    UploadResult,
    bundle_delete,
    bundle_rollback,
    bundle_upload,
    bundle_version_activate,
    bundle_versions_reap_stale,
    tool_invoke,
)
from agents.uploads import read_bundle_upload
from lightfast_cloud.api_errors import ErrorResponseSerializer
from lightfast_cloud.api_input import query_number
from organizations.models import Scope
from organizations.tenancy import OrganizationScopedAPIView


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


COMMON_ERRORS = {
    401: _error("Missing or invalid credentials."),
    403: _error("The credentials lack the scope (`permission_denied`)."),
    404: _error("No such bundle, version, agent or tool in your organization (`not_found`, `unknown_tool`)."),
}
UPLOAD_ERRORS = {
    400: _error(
        "No file, missing or invalid slug (`invalid_request`), empty, non-UTF-8 or unparsable bundle "
        "(`invalid_bundle`, `syntax_error` with line and column)."
    ),
    403: _error("Scope missing, or the organization's bundle storage is full (`quota_exceeded`)."),
    413: _error(
        "Larger than the plan's maximum bundle size (`payload_too_large`; the detail names the quota "
        "`max_bundle_bytes` and its `limit`)."
    ),
    415: _error("Neither multipart/form-data nor application/javascript (`unsupported_media_type`)."),
}
UPLOAD_DESCRIPTION = (
    "Send the bundle as `multipart/form-data` (field `file`, plus `slug`) or as the raw body with "
    "`Content-Type: application/javascript` (slug in the query string). The size limit is the plan's "
    "`max_bundle_bytes`, checked while the body streams in. Syntax errors answer at once with line and "
    "column; introspection then runs in the sandbox: poll the version (`?wait=10`) until it leaves "
    "`validating`. Identical bytes answer 200 with the existing version. `activate=false` keeps the "
    "current active version."
)
SLUG = OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The bundle's slug.")
NUMBER = OpenApiParameter("number", int, OpenApiParameter.PATH, description="The version number.")
UPLOAD_PARAMS = [
    OpenApiParameter("slug", str, OpenApiParameter.QUERY, description="Bundle slug (raw-body uploads)."),
    OpenApiParameter(
        "activate", bool, OpenApiParameter.QUERY, description="Activate when ready (default true)."
    ),
]
UPLOAD_REQUEST = {"multipart/form-data": OpenApiTypes.OBJECT, "application/javascript": OpenApiTypes.BINARY}


def _flag(value: str | None, *, default: bool) -> bool:
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise InvalidUpload(f"Expected true or false, got {value[:20]!r}.", detail={"field": "activate"})


class BundleAPIView(OrganizationScopedAPIView):
    """Tenant view that looks up the caller's live bundle by slug; any other organization's is a 404."""

    def get_bundle(self, slug: str) -> Bundle:
        """The caller's bundle or a 404."""
        bundle = bundle_get(organization=self.organization, slug=slug)
        if bundle is None:
            raise Http404(f"No bundle {slug!r} in this organization.")
        return bundle


class UploadAPIView(BundleAPIView):
    """Reads an upload with the plan's size limit and hands it to `bundle_upload`."""

    def upload(self, request: Request, *, slug: str | None, must_exist: bool) -> Response:
        """Shared body of both upload routes."""
        organization = self.organization
        data, fields, _filename = read_bundle_upload(
            request._request, limit=int(organization.max_bundle_bytes)
        )
        result: UploadResult = bundle_upload(
            organization=organization,
            slug=slug if slug is not None else fields.get("slug", ""),
            data=data,
            actor=self.tenant.actor,
            name=fields.get("name", ""),
            description=fields.get("description", ""),
            activate=_flag(fields.get("activate"), default=True),
            must_exist=must_exist,
        )
        version = result.version
        body = UploadResponseSerializer(
            {"bundle": version.bundle, "version": version, "created": result.created}
        ).data
        location = f"/api/v1/bundles/{version.bundle.slug}/versions/{version.number}"
        return Response(
            body,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
            headers={"Location": location},
        )


class BundleListView(UploadAPIView):
    """The organization's bundles; upload creates the bundle or adds a version to it."""

    @extend_schema(
        operation_id="bundles_list",
        responses={200: BundleListSerializer, **COMMON_ERRORS},
        tags=["bundles"],
    )
    def get(self, request: Request) -> Response:
        """Every live bundle with its active version number."""
        return Response(
            {"results": BundleSerializer(bundle_list(organization=self.organization), many=True).data}
        )

    @extend_schema(
        operation_id="bundles_upload",
        request=UPLOAD_REQUEST,
        parameters=UPLOAD_PARAMS,
        responses={
            201: UploadResponseSerializer,
            200: UploadResponseSerializer,
            **COMMON_ERRORS,
            **UPLOAD_ERRORS,
        },
        description=UPLOAD_DESCRIPTION,
        tags=["bundles"],
    )
    def post(self, request: Request) -> Response:
        """Upload a bundle file under a slug."""
        return self.upload(request, slug=None, must_exist=False)


class BundleDetailView(BundleAPIView):
    """One bundle: read or delete."""

    @extend_schema(
        operation_id="bundles_retrieve",
        parameters=[SLUG],
        responses={200: BundleSerializer, **COMMON_ERRORS},
        tags=["bundles"],
    )
    def get(self, request: Request, slug: str) -> Response:
        """The bundle."""
        return Response(BundleSerializer(self.get_bundle(slug)).data)

    @extend_schema(
        operation_id="bundles_delete",
        parameters=[SLUG],
        responses={204: None, **COMMON_ERRORS},
        description="Removes the bundle's files; versions referenced by past runs stay readable.",
        tags=["bundles"],
    )
    def delete(self, request: Request, slug: str) -> Response:
        """Delete the bundle and its files."""
        bundle_delete(bundle=self.get_bundle(slug), actor=self.tenant.actor)
        return Response(status=status.HTTP_204_NO_CONTENT)


class BundleVersionListView(UploadAPIView):
    """A bundle's versions; upload adds one."""

    @extend_schema(
        operation_id="bundle_versions_list",
        parameters=[SLUG],
        responses={200: BundleVersionListSerializer, **COMMON_ERRORS},
        tags=["bundles"],
    )
    def get(self, request: Request, slug: str) -> Response:
        """Every version, newest first (manifests included)."""
        versions = version_list(bundle=self.get_bundle(slug))
        return Response({"results": BundleVersionSerializer(versions, many=True).data})

    @extend_schema(
        operation_id="bundle_versions_upload",
        request=UPLOAD_REQUEST,
        parameters=[SLUG, UPLOAD_PARAMS[1]],
        responses={
            201: UploadResponseSerializer,
            200: UploadResponseSerializer,
            **COMMON_ERRORS,
            **UPLOAD_ERRORS,
        },
        description=UPLOAD_DESCRIPTION,
        tags=["bundles"],
    )
    def post(self, request: Request, slug: str) -> Response:
        """Upload a new version of an existing bundle."""
        self.get_bundle(slug)
        return self.upload(request, slug=slug, must_exist=True)


class BundleVersionDetailView(BundleAPIView):
    """One version; `?wait=N` long-polls up to N seconds (max 30) while it is validating."""

    def get_version(self, slug: str, number: int) -> BundleVersion:
        """The caller's version or a 404."""
        version = version_get(bundle=self.get_bundle(slug), number=number)
        if version is None:
            raise Http404(f"No version {number} of bundle {slug!r}.")
        return version

    @extend_schema(
        operation_id="bundle_versions_retrieve",
        parameters=[
            SLUG,
            NUMBER,
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": 3600},
                OpenApiParameter.QUERY,
                description="Seconds to wait while `validating` (at most 30 are waited).",
            ),
        ],
        responses={200: BundleVersionSerializer, **COMMON_ERRORS},
        tags=["bundles"],
    )
    def get(self, request: Request, slug: str, number: int) -> Response:
        """The version's status, manifest and error."""
        version = self.get_version(slug, number)
        wait = query_number(request, "wait", default=0.0, minimum=0.0, maximum=3600.0)
        if wait:
            version = version_wait(version=version, timeout_s=wait)
        if version.status == VersionStatus.VALIDATING:
            # Lazily recover a version whose introspection crashed, without a beat process.
            bundle_versions_reap_stale(organization_id=self.organization.pk)
        return Response(BundleVersionSerializer(version).data)


class BundleVersionActivateView(BundleVersionDetailView):
    """Make a ready version the active one."""

    # Only the version lookup is inherited; GET stays on the detail route.
    http_method_names = ["post", "options"]

    @extend_schema(
        operation_id="bundle_versions_activate",
        parameters=[SLUG, NUMBER],
        request=None,
        responses={
            200: BundleSerializer,
            409: _error("Not ready (`version_not_runnable`)."),
            **COMMON_ERRORS,
        },
        tags=["bundles"],
    )
    def post(self, request: Request, slug: str, number: int) -> Response:
        """Activate the version."""
        bundle = bundle_version_activate(version=self.get_version(slug, number), actor=self.tenant.actor)
        return Response(BundleSerializer(bundle).data)


class BundleRollbackView(BundleAPIView):
    """Activate an earlier version in one call."""

    @extend_schema(
        operation_id="bundles_rollback",
        parameters=[SLUG],
        request=RollbackSerializer,
        responses={200: BundleSerializer, 409: _error("No earlier ready version."), **COMMON_ERRORS},
        tags=["bundles"],
    )
    def post(self, request: Request, slug: str) -> Response:
        """Roll back to `version`, or to the newest ready version before the active one."""
        serializer = RollbackSerializer(data=request.data or {})
        serializer.is_valid(raise_exception=True)
        bundle = bundle_rollback(
            bundle=self.get_bundle(slug),
            actor=self.tenant.actor,
            to_number=serializer.validated_data.get("version"),
        )
        return Response(BundleSerializer(bundle).data)


class AgentListView(OrganizationScopedAPIView):
    """Every agent of every active bundle version of the organization."""

    @extend_schema(
        operation_id="agents_list",
        responses={200: AgentListSerializer, **COMMON_ERRORS},
        tags=["agents"],
    )
    def get(self, request: Request) -> Response:
        """Agents with their model and tools (JSON schemas from zod)."""
        return Response(
            {"results": AgentSerializer(agent_list(organization=self.organization), many=True).data}
        )


class ToolInvokeView(BundleAPIView):
    """Run one tool of the bundle's active version in the sandbox."""

    scope_by_method = {"POST": Scope.EXECUTE}

    @extend_schema(
        operation_id="tools_invoke",
        parameters=[SLUG, OpenApiParameter("tool", str, OpenApiParameter.PATH)],
        request=ToolInvokeSerializer,
        responses={
            200: ToolResultSerializer,
            409: _error("No runnable active version (`version_not_runnable`)."),
            **COMMON_ERRORS,
        },
        description="Answers `{ok, output, error, logs, usage}`; a tool that fails (bad input, limits, "
        "exceptions) is `ok: false` with a classified error, still HTTP 200. Needs the execute scope.",
        tags=["agents"],
    )
    def post(self, request: Request, slug: str, tool: str) -> Response:
        """Invoke the tool with `input` and answer the sandbox's result."""
        serializer = ToolInvokeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = tool_invoke(
            organization=self.organization,
            bundle=self.get_bundle(slug),
            tool=tool,
            agent=data.get("agent"),
            input=data.get("input", {}),
            actor=self.tenant.actor,
            timeout_ms=data.get("timeout_ms"),
        )
        return Response(result)
