"""Tenancy: the one function that makes a caller's credentials a `Tenant` (REST, SSE and websockets), and
the tenant API base views, which hand out only the caller's organization's objects."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any, ClassVar, TypeVar

from django.conf import settings
from django.db import models
from django.http import Http404
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework import generics
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from lightfast_cloud import sql
from lightfast_cloud.errors import LightfastError
from organizations.cors import cors_check_tenant
from organizations.models import ApiKey, Membership, Organization, Scope
from organizations.ratelimits import (
    ratelimit_api_request,
    ratelimit_apply_headers,
    ratelimit_auth_failure_record,
    ratelimit_auth_failures_check,
)
from organizations.selectors import membership_count_for_user, membership_for_user
from organizations.services import Actor

ORGANIZATION_HEADER = "X-Organization"

ModelT = TypeVar("ModelT", bound=models.Model)


class OrganizationSuspended(LightfastError):
    code = "organization_suspended"
    default_message = "This organization is suspended. Contact the platform operator."


class OrganizationRequired(LightfastError):
    code = "organization_required"
    default_message = f"You belong to several organizations; name one in the {ORGANIZATION_HEADER} header."


@dataclass(frozen=True)
class Tenant:
    """The resolved caller: its organization, what it may do, and how to record it in the audit log."""

    organization: Organization
    scopes: frozenset[str]
    actor: Actor
    api_key: ApiKey | None = None
    membership: Membership | None = None
    # A dashboard session's key (websockets opened with the session cookie): logging out or a
    # changed password ends what the session opened.
    session_key: str | None = None
    # A client token's agent (`bundle/agent`): the only one it may chat with (execution.client_tokens).
    agent: str | None = None

    def has_scope(self, scope: str) -> bool:
        """True when the caller holds `scope`."""
        return scope in self.scopes

    @property
    def connection_groups(self) -> list[str]:
        """Channel-layer groups told when this tenant's credentials stop holding (see `tenant_recheck`)."""
        groups = [self.organization.connections_group]
        if self.api_key is not None:
            groups.append(self.api_key.connections_group)
        if self.membership is not None:
            groups.append(self.membership.connections_group)
        return groups

    @property
    def expires_at(self) -> datetime | None:
        """When the credentials expire on their own (an API key's expiry), else None."""
        return self.api_key.expires_at if self.api_key is not None else None


class CredentialsRevoked(LightfastError):
    """The credentials a live connection was opened with no longer hold (`credentials_revoked`,
    `credentials_expired`, `organization_suspended`)."""

    code = "credentials_revoked"


def tenant_recheck(tenant: Tenant, *, now: datetime | None = None) -> Organization:
    """Re-read the tenant's credentials in one query; raises CredentialsRevoked when they stopped holding.

    For connections that outlive their authentication (websockets, SSE streams): the key must
    still exist, unrevoked and unexpired; the member must still be one, with the same role (the
    scopes were fixed at connect) and an active user; the organization must be active. Returns
    the organization with its current `api_rate`.
    """
    now = now or timezone.now()
    organization = tenant.organization
    active: bool
    api_rate: str
    if tenant.api_key is not None:
        key = _api_key_state(tenant.api_key.pk, organization.pk)
        if key is None or key[0] is not None:
            raise CredentialsRevoked(code="credentials_revoked", message="The API key was revoked.")
        if key[1] is not None and key[1] <= now:
            raise CredentialsRevoked(code="credentials_expired", message="The API key has expired.")
        active, api_rate = key[2], key[3]
    elif tenant.membership is not None:
        member = (
            Membership.objects.filter(pk=tenant.membership.pk, organization=organization)
            .values_list("role", "user__is_active", "organization__is_active", "organization__api_rate")
            .first()
        )
        if member is None or not member[1]:
            raise CredentialsRevoked(
                code="credentials_revoked", message="You are no longer a member of the organization."
            )
        if member[0] != tenant.membership.role:
            raise CredentialsRevoked(code="credentials_revoked", message="Your role changed; connect again.")
        session_key = tenant.session_key
        if session_key is not None and not _session_holds(session_key, tenant.membership.user_id):
            raise CredentialsRevoked(
                code="credentials_revoked", message="You signed out, or your password changed."
            )
        active, api_rate = member[2], member[3]
    else:
        current = Organization.objects.filter(pk=organization.pk).values_list("is_active", "api_rate").first()
        if current is None:
            raise CredentialsRevoked(code="credentials_revoked", message="The organization no longer exists.")
        active, api_rate = current
    if not active:
        raise CredentialsRevoked(code="organization_suspended", message="This organization is suspended.")
    organization.api_rate = api_rate
    return organization


def _api_key_state(key_id: int, organization_id: int) -> tuple[Any, ...] | None:
    """(revoked_at, expires_at, organization is_active, api_rate) of the organization's key, or None.

    Every live connection reads it when it opens and every LIGHTFAST_CREDENTIAL_RECHECK_S: one plain
    statement built once, its values converted as the ORM would.
    """
    query = _api_key_state_sql(sql.vendor())
    row = sql.fetch_one(query, [key_id, organization_id])
    if row is None:
        return None
    return tuple(
        sql.converter(model, name)(value)
        for (model, name), value in zip(_API_KEY_STATE_FIELDS, row, strict=True)
    )


_API_KEY_STATE_FIELDS: list[tuple[type[models.Model], str]] = [
    (ApiKey, "revoked_at"),
    (ApiKey, "expires_at"),
    (Organization, "is_active"),
    (Organization, "api_rate"),
]


@functools.cache
def _api_key_state_sql(vendor: str) -> str:
    def col(model: type[models.Model], name: str) -> str:
        return sql.column_for(vendor, model, name)

    selected = ", ".join(
        f"{'k' if model is ApiKey else 'o'}.{col(model, name)}" for model, name in _API_KEY_STATE_FIELDS
    )
    # Quoted identifiers only; the values are parameters.
    return (
        f"SELECT {selected} FROM {sql.table_for(vendor, ApiKey)} k"  # noqa: S608
        f" JOIN {sql.table_for(vendor, Organization)} o"
        f" ON o.{col(Organization, 'id')} = k.{col(ApiKey, 'organization')}"
        f" WHERE k.{col(ApiKey, 'id')} = %s AND k.{col(ApiKey, 'organization')} = %s"
    )


def _session_holds(session_key: str, user_id: int) -> bool:
    """Whether the dashboard session still signs in `user_id` (not logged out, same password)."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend

    data = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key).load()
    if str(data.get(SESSION_KEY)) != str(user_id) or BACKEND_SESSION_KEY not in data:
        return False
    user = load_backend(data[BACKEND_SESSION_KEY]).get_user(user_id)
    return user is not None and constant_time_compare(
        str(data.get(HASH_SESSION_KEY, "")), user.get_session_auth_hash()
    )


def tenant_of(
    *,
    api_key: ApiKey | None = None,
    membership: Membership | None = None,
    user: Any = None,
    scopes: frozenset[str] | None = None,
    session_key: str | None = None,
) -> Tenant:
    """The tenant of authenticated credentials (an API key, or a member's membership): every transport's.

    `user` is the membership's user when the caller has it at hand; `scopes` narrows what the
    credentials allow (a websocket ticket carries its issuer's). Raises OrganizationSuspended when
    the organization is suspended.
    """
    if api_key is not None:
        allowed = frozenset(api_key.scopes)
        tenant = Tenant(
            organization=api_key.organization,
            scopes=allowed if scopes is None else scopes & allowed,
            actor=Actor.for_api_key(api_key),
            api_key=api_key,
        )
    else:
        assert membership is not None, "a tenant needs an API key or a membership"
        tenant = Tenant(
            organization=membership.organization,
            scopes=membership.scopes if scopes is None else scopes & membership.scopes,
            actor=Actor.for_user(user if user is not None else membership.user),
            membership=membership,
            session_key=session_key,
        )
    if not tenant.organization.is_active:
        raise OrganizationSuspended()
    return tenant


def tenant_resolve(request: Request) -> Tenant:
    """The caller's organization from its API key or session membership; raises 401/403/404 errors."""
    if isinstance(request.auth, Tenant):  # authenticated as a tenant already (a client token)
        return request.auth
    if isinstance(request.auth, ApiKey):
        return tenant_of(api_key=request.auth)
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
        return tenant_of(
            membership=membership,
            user=user,
            session_key=getattr(getattr(request, "session", None), "session_key", None),
        )


def tenant_admit(request: Request) -> Tenant:
    """Authenticate and resolve the caller, then count the request: every HTTP tenant entry point calls this.

    The client IP's failed authentications are the gate (LIGHTFAST_AUTH_FAILURE_RATE): a refused
    credential counts against it, and an IP over the limit gets the same 429 whatever it presents
    (an unknown key, a valid one, a valid one of a suspended organization), so it cannot tell them
    apart. Websockets apply the same gate in `execution.ws_auth.ws_tenant_resolve`.
    """
    django_request = request._request
    try:
        tenant = tenant_resolve(request)
    except (AuthenticationFailed, NotAuthenticated) as exc:
        raise ratelimit_auth_failure_record(request=django_request) or exc from exc
    except (OrganizationSuspended, OrganizationRequired, Http404):
        ratelimit_auth_failures_check(request=django_request)
        raise
    # Checks the IP first, in the same round trip as the organization's and key's counters.
    ratelimit_api_request(request=django_request, organization=tenant.organization, api_key=tenant.api_key)
    cors_check_tenant(django_request, tenant.organization.pk)
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


# The safe path of a tenant lookup: scoping to the tenant's organization. A subclass (outside this module)
# that redefines one of these is refused when it is created; reach other organizations' rows only
# through `unscoped_queryset(model, reason=...)`.
LOOKUP_SAFE_PATH_METHODS = frozenset({"scoped", "get_scoped_object_or_404", "unscoped_queryset"})
# A tenant API view's safe path also covers how it finds its caller and its querysets; filter in
# `filter_queryset`.
SAFE_PATH_METHODS = LOOKUP_SAFE_PATH_METHODS | {
    "perform_authentication",
    "check_permissions",
    "get_queryset",
}


class TenantScopedLookups:
    """Lookups restricted to `self.tenant`'s organization: the one way in for API views and pages."""

    # Lookup path from the model to its organization, e.g. "bundle__organization".
    organization_field: ClassVar[str] = "organization"
    # What subclasses outside this module may not redefine (with the other bases' sets in this module).
    safe_path_methods: ClassVar[frozenset[str]] = LOOKUP_SAFE_PATH_METHODS
    tenant: Tenant

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a subclass (outside this module) that redefines the safe path (`safe_path_methods`)."""
        super().__init_subclass__(**kwargs)
        if cls.__module__ == __name__:
            return
        # Only this module's bases say what is guarded: a subclass cannot shrink the set.
        guarded = frozenset().union(
            *(vars(base).get("safe_path_methods", ()) for base in cls.__mro__ if base.__module__ == __name__)
        )
        overridden = sorted(guarded & set(vars(cls)))
        if overridden:
            raise TypeError(
                f"{cls.__module__}.{cls.__qualname__} overrides {', '.join(overridden)} of the tenant base "
                "view; filter the scoped queryset instead, or use unscoped_queryset(model, reason=...)."
            )

    @property
    def organization(self) -> Organization:
        """The caller's organization."""
        return self.tenant.organization

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


class OrganizationScopedMixin(TenantScopedLookups):
    """Resolves `self.tenant` before permission checks and scopes every lookup to its organization."""

    # Per-method scope overrides, e.g. {"POST": "execute"} for a view that runs things.
    scope_by_method: ClassVar[dict[str, str]] = {}
    safe_path_methods: ClassVar[frozenset[str]] = SAFE_PATH_METHODS

    def perform_authentication(self, request: Request) -> None:
        """Authenticate lazily, inside `tenant_admit`, so every failure passes the client IP's gate."""

    def check_permissions(self, request: Request) -> None:
        """Resolve the tenant first: every permission depends on it; then count the request's rate limits."""
        # Here, not in a throttle class: a view cannot opt out of it, and scope refusals count too.
        self.tenant = tenant_admit(request)
        super().check_permissions(request)  # type: ignore[misc]

    def finalize_response(self, request: Request, response: Response, *args: Any, **kwargs: Any) -> Response:
        """Every response carries the rate-limit headers of the request's counters."""
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        return ratelimit_apply_headers(request._request, response)  # type: ignore[no-any-return]

    def required_scope(self, request: Request) -> str:
        """The scope this request's method needs."""
        return required_scope_for(request.method or "GET", self.scope_by_method)


def required_scope_for(method: str, scope_by_method: dict[str, str]) -> str:
    """The scope a request method needs: read on safe methods, write on the others, unless mapped."""
    if method in scope_by_method:
        return scope_by_method[method]
    return Scope.READ if method in SAFE_METHODS else Scope.WRITE


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
