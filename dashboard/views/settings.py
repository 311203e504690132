"""`/settings/`: API keys, members and invitations, the egress allow-list, browser origins, variables and
write-only secrets, the model provider. Every change goes through the `organizations` services."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from django.views.generic import TemplateView

from dashboard.forms import (
    AllowedOriginForm,
    ApiKeyForm,
    EgressHostForm,
    InvitationForm,
    MemberRoleForm,
    ModelProviderForm,
    OrganizationProfileForm,
    VariableForm,
    form_add_service_error,
)
from dashboard.scoping import OrganizationPageMixin
from lightfast_cloud.errors import LightfastError
from organizations.errors import RoleEscalation
from organizations.models import (
    AllowedOrigin,
    ApiKey,
    EgressAllowedHost,
    Invitation,
    Membership,
    ModelProviderConfig,
    OrganizationVariable,
    Role,
)
from organizations.services import (
    allowed_origin_add,
    allowed_origin_remove,
    apikey_create,
    apikey_revoke,
    egress_host_add,
    egress_host_remove,
    invitation_create,
    invitation_revoke,
    membership_change_role,
    membership_remove,
    model_provider_clear,
    model_provider_set,
    org_update,
    role_grantable_by,
    variable_delete,
    variable_set,
)

# Each settings form's name: its prefix in the page and its key in the template context.
SETTINGS_FORMS: dict[str, type[forms.Form]] = {
    "apikey_form": ApiKeyForm,
    "invitation_form": InvitationForm,
    "egress_form": EgressHostForm,
    "origin_form": AllowedOriginForm,
    "variable_form": VariableForm,
    "provider_form": ModelProviderForm,
    "profile_form": OrganizationProfileForm,
}
NO_STORE = "no-store"


class SettingsView(OrganizationPageMixin, TemplateView):
    """The settings page: every section's list and form (forms only for roles that may write)."""

    template_name = "dashboard/settings.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        organization = self.organization
        provider = ModelProviderConfig.objects.filter(organization=organization).first()
        for name, form_class in SETTINGS_FORMS.items():
            if name not in context:
                initial = self._initial(name, provider)
                context[name] = form_class(prefix=name.removesuffix("_form"), initial=initial)
        membership = self.tenant.membership
        context.update(
            api_keys=self.scoped(ApiKey.objects.select_related("created_by")),
            members=[
                (member, MemberRoleForm(prefix=f"member-{member.pk}", initial={"role": member.role}))
                for member in self.scoped(Membership.objects.select_related("user"))
            ],
            invitations=self.scoped(Invitation.objects.select_related("created_by", "accepted_by"))[:50],
            egress_hosts=self.scoped(EgressAllowedHost),
            origins=self.scoped(AllowedOrigin),
            variables=self.scoped(OrganizationVariable).order_by("key"),
            provider=provider,
            my_membership=membership,
            is_owner=membership is not None and membership.role == Role.OWNER,
        )
        return context

    def _initial(self, name: str, provider: ModelProviderConfig | None) -> dict[str, Any]:
        if name == "profile_form":
            return {"name": self.organization.name}
        if name == "provider_form" and provider is not None:
            return {"base_url": provider.base_url, "model_map": provider.model_map or {}}
        return {}

    def render_settings(self, **context: Any) -> HttpResponse:
        """The page with bound forms (errors: 200, as Django's form views answer) or one-time values."""
        response = self.render_to_response(self.get_context_data(**context))
        response["Cache-Control"] = NO_STORE  # it may show a new key or link
        return response


class SettingsFormView(SettingsView):
    """POST one settings form: on success the service's change, on refusal the page with the errors."""

    http_method_names = ["post"]
    form_name: ClassVar[str]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = SETTINGS_FORMS[self.form_name](request.POST, prefix=self.form_name.removesuffix("_form"))
        if form.is_valid():
            try:
                return self.perform(form)
            except LightfastError as exc:
                form_add_service_error(form, exc)
        return self.render_settings(**{self.form_name: form})

    def perform(self, form: Any) -> HttpResponse:
        raise NotImplementedError


def _back(section: str) -> HttpResponse:
    return redirect(f"{reverse('dashboard:settings')}#{section}")


class ApiKeyCreateView(SettingsFormView):
    """Create a key; the page shows it once, with a copy button."""

    form_name = "apikey_form"

    def perform(self, form: ApiKeyForm) -> HttpResponse:
        days = form.cleaned_data.get("expires_in_days")
        try:
            api_key, raw_key = apikey_create(
                organization=self.organization,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                actor=self.tenant.actor,
                creator_scopes=self.tenant.scopes,
            )
        except LightfastError as exc:
            form_add_service_error(form, exc, field="scopes")
            return self.render_settings(apikey_form=form)
        return self.render_settings(created_key=api_key, created_key_secret=raw_key)


class ApiKeyRevokeView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, lookup_id: str) -> HttpResponse:
        api_key = apikey_revoke(
            api_key=self.get_scoped_object_or_404(ApiKey, lookup_id=lookup_id), actor=self.tenant.actor
        )
        messages.success(request, f"Revoked {api_key.name or api_key.display_prefix}.")
        return _back("api-keys")


class InvitationCreateView(SettingsFormView):
    """Create an invitation; the page shows its link once, with a copy button."""

    form_name = "invitation_form"

    def perform(self, form: InvitationForm) -> HttpResponse:
        membership = self.tenant.membership
        try:
            invitation, token = invitation_create(
                organization=self.organization,
                role=form.cleaned_data["role"],
                email=form.cleaned_data.get("email") or "",
                actor=self.tenant.actor,
                inviter_role=membership.role if membership is not None else None,
            )
        except LightfastError as exc:
            form_add_service_error(form, exc, field="role")
            return self.render_settings(invitation_form=form)
        link = self.request.build_absolute_uri(reverse("dashboard:invitation", args=[token]))
        return self.render_settings(created_invitation=invitation, created_invitation_link=link)


class InvitationRevokeView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, invitation_id: int) -> HttpResponse:
        invitation_revoke(
            invitation=self.get_scoped_object_or_404(Invitation, pk=invitation_id), actor=self.tenant.actor
        )
        messages.success(request, "Invitation revoked.")
        return _back("members")


def _check_role_change(granter: Membership | None, member: Membership, role: str | None) -> None:
    """Only owners hand out ownership or change an owner (admins manage admins, members and viewers)."""
    granter_role = granter.role if granter is not None else None
    if member.role == Role.OWNER and granter_role != Role.OWNER:
        raise RoleEscalation()
    if role is not None and not role_grantable_by(role=role, granter_role=granter_role):
        raise RoleEscalation()


class MemberRoleView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, membership_id: int) -> HttpResponse:
        member = self.get_scoped_object_or_404(Membership.objects.select_related("user"), pk=membership_id)
        form = MemberRoleForm(request.POST, prefix=f"member-{member.pk}")
        if not form.is_valid():
            messages.error(request, "Choose one of the roles.")
            return _back("members")
        role = form.cleaned_data["role"]
        try:
            _check_role_change(self.tenant.membership, member, role)
            membership_change_role(membership=member, role=role, actor=self.tenant.actor)
        except LightfastError as exc:
            messages.error(request, exc.message)
        else:
            role_name = member.get_role_display().lower()
            messages.success(request, f"{member.user.get_username()} is now {role_name}.")
        return _back("members")


class MemberRemoveView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, membership_id: int) -> HttpResponse:
        member = self.get_scoped_object_or_404(Membership.objects.select_related("user"), pk=membership_id)
        try:
            _check_role_change(self.tenant.membership, member, None)
            membership_remove(membership=member, actor=self.tenant.actor)
        except LightfastError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Removed {member.user.get_username()}.")
        return _back("members")


class EgressHostAddView(SettingsFormView):
    form_name = "egress_form"

    def perform(self, form: EgressHostForm) -> HttpResponse:
        host, _ = egress_host_add(
            organization=self.organization, pattern=form.cleaned_data["pattern"], actor=self.tenant.actor
        )
        messages.success(self.request, f"Sandbox code may now fetch from {host.pattern}.")
        return _back("egress")


class EgressHostRemoveView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, host_id: int) -> HttpResponse:
        host = self.get_scoped_object_or_404(EgressAllowedHost, pk=host_id)
        egress_host_remove(host=host, actor=self.tenant.actor)
        messages.success(request, f"Removed {host.pattern}.")
        return _back("egress")


class AllowedOriginAddView(SettingsFormView):
    form_name = "origin_form"

    def perform(self, form: AllowedOriginForm) -> HttpResponse:
        allowed, _ = allowed_origin_add(
            organization=self.organization, origin=form.cleaned_data["origin"], actor=self.tenant.actor
        )
        messages.success(self.request, f"Pages from {allowed.origin} may now call the API.")
        return _back("origins")


class AllowedOriginRemoveView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, origin_id: int) -> HttpResponse:
        allowed = self.get_scoped_object_or_404(AllowedOrigin, pk=origin_id)
        allowed_origin_remove(allowed=allowed, actor=self.tenant.actor)
        messages.success(request, f"Removed {allowed.origin}.")
        return _back("origins")


class VariableSetView(SettingsFormView):
    """Create or replace a variable or secret; an empty value keeps a stored secret's value."""

    form_name = "variable_form"

    def perform(self, form: VariableForm) -> HttpResponse:
        data = form.cleaned_data
        value = data["value"]
        if value == "" and data["is_secret"]:
            value = None  # keep the stored secret's value (the service refuses when there is none)
        variable, created = variable_set(
            organization=self.organization,
            key=data["key"],
            value=value,
            is_secret=data["is_secret"],
            inject_header=data["inject_header"],
            inject_prefix=data["inject_prefix"],
            inject_hosts=data["inject_hosts"],
            actor=self.tenant.actor,
        )
        kind = "Secret" if variable.is_secret else "Variable"
        messages.success(self.request, f"{kind} {variable.key} {'added' if created else 'saved'}.")
        return _back("variables")


class VariableDeleteView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest, key: str) -> HttpResponse:
        variable = self.get_scoped_object_or_404(OrganizationVariable, key=key)
        variable_delete(variable=variable, actor=self.tenant.actor)
        messages.success(request, f"Deleted {variable.key}.")
        return _back("variables")


class ModelProviderSetView(SettingsFormView):
    form_name = "provider_form"

    def perform(self, form: ModelProviderForm) -> HttpResponse:
        data = form.cleaned_data
        model_provider_set(
            organization=self.organization,
            base_url=data["base_url"],
            api_key=data["api_key"] or None,
            model_map=data["model_map"],
            actor=self.tenant.actor,
        )
        messages.success(self.request, "Model provider saved.")
        return _back("model-provider")


class ModelProviderClearView(SettingsView):
    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        model_provider_clear(organization=self.organization, actor=self.tenant.actor)
        messages.success(request, "Back to the platform's model provider.")
        return _back("model-provider")


class OrganizationProfileView(SettingsFormView):
    form_name = "profile_form"

    def perform(self, form: OrganizationProfileForm) -> HttpResponse:
        org_update(
            organization=self.organization,
            changes={"name": form.cleaned_data["name"]},
            actor=self.tenant.actor,
        )
        messages.success(self.request, "Organization renamed.")
        return _back("organization")
