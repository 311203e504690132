"""Creating another organization and switching between the ones a user belongs to."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.mixins import LoginRequiredMixin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme
from django.views import View
from django.views.generic import FormView

from dashboard.forms import OrganizationForm, form_add_service_error
from dashboard.scoping import SESSION_ORGANIZATION, organization_switch
from lightfast_cloud.errors import LightfastError
from organizations.services import Actor, org_create, organization_slug_from_name


class OrganizationCreateView(LoginRequiredMixin, FormView):
    """`/organizations/new/`: an organization the signed-in user owns, made current."""

    template_name = "dashboard/organization_new.html"
    form_class = OrganizationForm

    def form_valid(self, form: OrganizationForm) -> HttpResponse:
        name = form.cleaned_data["name"]
        try:
            organization = org_create(
                slug=organization_slug_from_name(name),
                name=name,
                owner=self.request.user,  # type: ignore[arg-type]
                actor=Actor.for_user(self.request.user),  # type: ignore[arg-type]
            )
        except LightfastError as exc:
            form_add_service_error(form, exc, field="name")
            return self.form_invalid(form)
        self.request.session[SESSION_ORGANIZATION] = organization.public_id
        messages.success(self.request, f"{organization.name} is ready.")
        return redirect("dashboard:overview")


class OrganizationSwitchView(LoginRequiredMixin, View):
    """`/organizations/switch/` (POST `organization`: a slug or public id the user is a member of)."""

    def post(self, request: HttpRequest) -> HttpResponse:
        membership = organization_switch(request, ref=request.POST.get("organization", "").strip())
        if membership is None:
            messages.error(request, "You are not a member of that organization.")
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
            target = ""
        # Another organization's objects are 404 here: go to the section's start, not the same object.
        return redirect(_section_start(target) if target else "dashboard:overview")


def _section_start(path: str) -> str:
    """`/bundles/weather/` -> `/bundles/`: the first path segment of a page."""
    first = path.strip("/").split("/", 1)[0]
    return f"/{first}/" if first else "/"
