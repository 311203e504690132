"""Every dashboard page belongs to the signed-in member's current organization: it is kept in the
session, resolved to a `Tenant` (organizations/tenancy.py) and every lookup is scoped to it."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from django.contrib.auth.mixins import LoginRequiredMixin
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render

from organizations.models import Membership
from organizations.selectors import membership_for_user
from organizations.tenancy import (
    OrganizationSuspended,
    Tenant,
    TenantScopedLookups,
    required_scope_for,
    tenant_of,
)

# The session key holding the current organization's public id.
SESSION_ORGANIZATION = "lightfast_organization"


def current_membership(request: HttpRequest) -> Membership | None:
    """The signed-in user's membership in the session's organization, else their oldest one (remembered)."""
    memberships = Membership.objects.select_related("organization").filter(user=request.user)  # type: ignore[misc]
    ref = request.session.get(SESSION_ORGANIZATION)
    membership = memberships.filter(organization__public_id=ref).first() if ref else None
    if membership is None:
        membership = memberships.order_by("created_at", "pk").first()
        if membership is not None:
            request.session[SESSION_ORGANIZATION] = membership.organization.public_id
    return membership


def organization_switch(request: HttpRequest, *, ref: str) -> Membership | None:
    """Make the organization `ref` (slug or public id) current, when the user is a member; else None."""
    membership = membership_for_user(user=request.user, organization_ref=ref)  # type: ignore[arg-type]
    if membership is not None:
        request.session[SESSION_ORGANIZATION] = membership.organization.public_id
    return membership


class OrganizationPageMixin(LoginRequiredMixin, TenantScopedLookups):
    """Base of every organization page: sign-in required, `self.tenant` resolved, lookups scoped.

    Anonymous visitors go to the login page (an htmx request gets `HX-Redirect` to it); a user
    without an organization to the page that creates one; a suspended organization shows why.
    Safe methods need the `read` scope and the others `write` (admins and owners), unless
    `scope_by_method` maps a method to another scope.
    Look objects up with `self.scoped(Model)` or `self.get_scoped_object_or_404(Model, ...)`:
    another organization's objects are 404.
    """

    scope_by_method: ClassVar[dict[str, str]] = {}
    tenant: Tenant

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """Resolve the tenant from the session, check the method's scope, then run the page."""
        if not request.user.is_authenticated:
            if request.headers.get("HX-Request"):
                # An htmx fragment (a poll) of a page whose session ended: the whole page goes to log in.
                current = urlsplit(request.headers.get("HX-Current-URL", ""))
                back = (current.path + (f"?{current.query}" if current.query else "")) or "/"
                login = redirect_to_login(back)
                return HttpResponse(status=204, headers={"HX-Redirect": login["Location"]})
            return self.handle_no_permission()
        membership = current_membership(request)
        if membership is None:
            return redirect("dashboard:organization-new")
        try:
            self.tenant = tenant_of(
                membership=membership, user=request.user, session_key=request.session.session_key
            )
        except OrganizationSuspended:
            context = {"organization": membership.organization}
            return render(request, "dashboard/suspended.html", context, status=403)
        request.tenant = self.tenant  # type: ignore[attr-defined]  # for the navigation (context processor)
        required = required_scope_for(request.method or "GET", self.scope_by_method)
        if not self.tenant.has_scope(required):
            raise PermissionDenied(f"This needs the {required} permission, which your role does not have.")
        response: HttpResponseBase = super().dispatch(request, *args, **kwargs)
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        """Every page knows its tenant and whether the member may change things."""
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        context.update(tenant=self.tenant, organization=self.tenant.organization, can_write=self.can_write)
        return context

    @property
    def can_write(self) -> bool:
        """Whether the member's role may change the organization's settings."""
        return self.tenant.has_scope("write")
