"""The tenant API base: resolve the caller's organization once, then hand out only its objects.

Every tenant API view derives from `OrganizationScopedAPIView` (or the generic
variant). The organization comes from the API key or from the session user's
membership; lookups go through `scoped()` / `get_scoped_object_or_404()`, so
another organization's object is a 404. `unscoped_queryset()` is the one,
deliberately conspicuous, way around that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from django.db import models
from django.http import Http404
from rest_framework import generics, status
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lightfast_cloud.api_errors import ApiError
from organizations.models import ApiKey, Membership, Organization, Scope
from organizations.ratelimits import (
    ratelimit_api_request,
    ratelimit_apply_headers,
    ratelimit_auth_failure_record,
)
from organizations.selectors import membership_count_for_user, membership_for_user
from organizations.services import Actor

ORGANIZATION_HEADER = "X-Organization"

ModelT = TypeVar("ModelT", bound=models.Model)


class OrganizationSuspended(ApiError):
    status_code = status.HTTP_403_FORBIDDEN
    error_type = "organization_suspended"
    default_detail = "This organization is suspended. Contact the platform operator."


class OrganizationRequired(ApiError):
    status_code = status.HTTP_400_BAD_REQUEST
    error_type = "organization_required"
    default_detail = f"You belong to several organizations; name one in the {ORGANIZATION_HEADER} header."


@dataclass(frozen=True)
class Tenant:
    """The resolved caller: its organization, what it may do, and how to record it in the audit log."""

    organization: Organization
    scopes: frozenset[str]
    actor: Actor
    api_key: ApiKey | None = None
    membership: Membership | None = None

    def has_scope(self, scope: str) -> bool:
        """True when the caller holds `scope`."""
        return scope in self.scopes


def tenant_resolve(request: Request) -> Tenant:
    """The caller's organization from its API key or session membership; raises 401/403/404 errors."""
    if isinstance(request.auth, ApiKey):
        api_key = request.auth
        tenant = Tenant(
            organization=api_key.organization,
            scopes=frozenset(api_key.scopes),
            actor=Actor.for_api_key(api_key),
            api_key=api_key,
        )
    else:
        user = request.user
        if user is None or not user.is_authenticated:
            raise NotAuthenticated()
        ref = request.headers.get(ORGANIZATION_HEADER, "").strip() or None
        membership = membership_for_user(user=user, organization_ref=ref)
        if membership is None:
            if ref is None and membership_count_for_user(user=user) > 1:
                raise OrganizationRequired()
            # Not a member (or no such organization): indistinguishable on purpose.
            raise Http404("No organization of yours matches.")
        tenant = Tenant(
            organization=membership.organization,
            scopes=membership.scopes,
            actor=Actor.for_user(user),
            membership=membership,
        )
    if not tenant.organization.is_active:
        raise OrganizationSuspended()
    return tenant


class HasRequiredScope(BasePermission):
    """Read on safe methods, write on the others, unless the view maps a method to another scope."""

    message = "This action needs a scope your credentials do not have."

    def has_permission(self, request: Request, view: APIView) -> bool:
        """Checks the tenant's scopes against the view's requirement for this method."""
        tenant: Tenant = view.tenant  # type: ignore[attr-defined]
        required = view.required_scope(request)  # type: ignore[attr-defined]
        if tenant.has_scope(required):
            return True
        raise PermissionDenied(
            f"This action needs the `{required}` scope"
            + (" (admin or owner role)." if required == Scope.WRITE and tenant.membership else ".")
        )


class OrganizationScopedMixin:
    """Resolves `self.tenant` before permission checks and scopes every lookup to its organization."""

    # Per-method scope overrides, e.g. {"POST": "execute"} for a view that runs things.
    scope_by_method: ClassVar[dict[str, str]] = {}
    # Lookup path from the model to its organization, e.g. "bundle__organization".
    organization_field: ClassVar[str] = "organization"
    tenant: Tenant

    @property
    def organization(self) -> Organization:
        """The caller's organization."""
        return self.tenant.organization

    def check_permissions(self, request: Request) -> None:
        """Resolve the tenant first: every permission depends on it; then count the request's rate limits."""
        self.tenant = tenant_resolve(request)
        # Here, not in a throttle class: a view cannot opt out of it, and scope refusals count too.
        ratelimit_api_request(
            request=request._request, organization=self.tenant.organization, api_key=self.tenant.api_key
        )
        super().check_permissions(request)  # type: ignore[misc]

    def handle_exception(self, exc: Exception) -> Response:
        """Count failed authentications against the client IP."""
        if isinstance(exc, AuthenticationFailed | NotAuthenticated):
            # Over the IP's limit: 429 as for valid credentials (ratelimit_api_request checks the IP).
            exc = ratelimit_auth_failure_record(request=self.request._request) or exc  # type: ignore[attr-defined]
        return super().handle_exception(exc)  # type: ignore[misc, no-any-return]

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        """Every response carries the rate-limit headers of the request's counters."""
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        return ratelimit_apply_headers(request._request, response)  # type: ignore[no-any-return]

    def required_scope(self, request: Request) -> str:
        """The scope this request's method needs."""
        method = request.method or "GET"
        if method in self.scope_by_method:
            return self.scope_by_method[method]
        return Scope.READ if method in SAFE_METHODS else Scope.WRITE

    def scoped(self, source: type[ModelT] | models.QuerySet[ModelT]) -> models.QuerySet[ModelT]:
        """`source` (a model or queryset) restricted to the caller's organization."""
        queryset = source._default_manager.all() if isinstance(source, type) else source
        return queryset.filter(**{self.organization_field: self.tenant.organization})

    def get_scoped_object_or_404(
        self, source: type[ModelT] | models.QuerySet[ModelT], **lookup: Any
    ) -> ModelT:
        """One object of the caller's organization; another organization's object is a 404."""
        try:
            return self.scoped(source).get(**lookup)
        except (models.ObjectDoesNotExist, ValueError, TypeError) as exc:
            raise Http404("Not found.") from exc

    def unscoped_queryset(self, model: type[ModelT], *, reason: str) -> models.QuerySet[ModelT]:
        """ESCAPE HATCH: every organization's rows. Needs a reason a reviewer can judge; prefer `scoped()`."""
        if not reason.strip():
            raise ValueError("unscoped_queryset needs a reason")
        return model._default_manager.all()


class OrganizationScopedAPIView(OrganizationScopedMixin, APIView):
    """Base class of tenant API views."""

    permission_classes = [HasRequiredScope]


class OrganizationScopedGenericAPIView(OrganizationScopedMixin, generics.GenericAPIView):
    """Base class of tenant generic views: set `queryset`; `get_queryset()` scopes it."""

    permission_classes = [HasRequiredScope]

    def get_queryset(self) -> models.QuerySet[Any]:
        """The view's queryset restricted to the caller's organization."""
        if getattr(self, "swagger_fake_view", False):  # schema generation has no caller
            return super().get_queryset().none()
        return self.scoped(super().get_queryset())
