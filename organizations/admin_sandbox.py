"""Admin inlines for an organization's sandbox and model settings; every save goes through the services."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.forms import BaseInlineFormSet

from organizations.errors import SettingInvalid
from organizations.models import AllowedOrigin, EgressAllowedHost, ModelProviderConfig, OrganizationVariable
from organizations.services import (
    Actor,
    allowed_origin_add,
    allowed_origin_clean,
    allowed_origin_remove,
    egress_host_add,
    egress_host_clean,
    egress_host_remove,
    model_map_clean,
    model_provider_clean,
    model_provider_clear,
    model_provider_set,
    variable_clean,
    variable_delete,
    variable_set,
)

_KEEP_HINT = "Stored and never shown. Leave blank to keep it."


def _hosts_from_text(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class VariableAdminForm(forms.ModelForm):
    """A variable row: the value field never shows a stored secret."""

    new_value = forms.CharField(
        label="value", required=False, strip=False, widget=forms.TextInput(attrs={"size": 30})
    )
    # Not stripped: a prefix such as "Bearer " ends with the space the header needs.
    inject_prefix = forms.CharField(required=False, strip=False, max_length=50)
    hosts = forms.CharField(
        label="inject hosts",
        required=False,
        help_text="Comma-separated, exact or *.domain, optionally :port (443 when absent; https only).",
        widget=forms.TextInput(attrs={"size": 30}),
    )

    class Meta:
        model = OrganizationVariable
        fields = ["key", "is_secret", "inject_header", "inject_prefix"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        variable = self.instance
        if variable.pk and variable.is_secret:
            self.fields["new_value"].widget = forms.PasswordInput(render_value=False, attrs={"size": 30})
            self.fields["new_value"].help_text = _KEEP_HINT
        elif variable.pk:
            self.fields["new_value"].initial = variable.value
        if variable.pk:
            self.fields["hosts"].initial = ", ".join(variable.inject_hosts or [])

    def clean(self) -> dict[str, Any]:
        """Validate with the same rules as the API (`variable_clean`)."""
        super().clean()
        data = self.cleaned_data
        if self.errors or not self.has_changed():
            return data
        existing = self.instance if self.instance.pk else None
        value: str | None = data.get("new_value", "")
        if existing is not None and existing.is_secret and data.get("is_secret") and not value:
            value = None  # blank keeps the stored secret
        try:
            fields = variable_clean(
                key=data.get("key") or "",
                value=value,
                is_secret=bool(data.get("is_secret")),
                inject_header=data.get("inject_header") or "",
                inject_prefix=data.get("inject_prefix") or "",
                inject_hosts=_hosts_from_text(data.get("hosts") or ""),
                existing=existing,
            )
        except SettingInvalid as exc:
            raise forms.ValidationError(exc.message) from exc
        data["cleaned_variable"] = fields
        return data


class OrganizationVariableInline(admin.TabularInline):
    model = OrganizationVariable
    form = VariableAdminForm
    extra = 0
    fields = ["key", "is_secret", "new_value", "inject_header", "inject_prefix", "hosts", "updated_at"]
    readonly_fields = ["updated_at"]
    verbose_name = "variable or secret"
    verbose_name_plural = "variables (process.env) and secrets (host-injected headers)"


class EgressHostAdminForm(forms.ModelForm):
    class Meta:
        model = EgressAllowedHost
        fields = ["pattern"]

    def clean_pattern(self) -> str:
        """Validate and normalise with the API's rules."""
        try:
            return egress_host_clean(pattern=self.cleaned_data["pattern"])
        except SettingInvalid as exc:
            raise forms.ValidationError(exc.message) from exc


class EgressAllowedHostInline(admin.TabularInline):
    model = EgressAllowedHost
    form = EgressHostAdminForm
    extra = 0
    fields = ["pattern", "created_at"]
    readonly_fields = ["created_at"]
    verbose_name_plural = "egress allow list (everything else is denied)"


class AllowedOriginAdminForm(forms.ModelForm):
    class Meta:
        model = AllowedOrigin
        fields = ["origin"]

    def clean_origin(self) -> str:
        """Validate and normalise with the API's rules."""
        try:
            return allowed_origin_clean(origin=self.cleaned_data["origin"])
        except SettingInvalid as exc:
            raise forms.ValidationError(exc.message) from exc


class AllowedOriginInline(admin.TabularInline):
    model = AllowedOrigin
    form = AllowedOriginAdminForm
    extra = 0
    fields = ["origin", "created_at"]
    readonly_fields = ["created_at"]
    verbose_name_plural = "allowed browser origins (CORS for client tokens)"


class ModelProviderAdminForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_KEEP_HINT + " Changing the base URL without a new key drops the stored one.",
    )

    class Meta:
        model = ModelProviderConfig
        fields = ["base_url", "model_map"]

    def clean(self) -> dict[str, Any]:
        """Validate with the API's rules."""
        super().clean()
        data = self.cleaned_data
        if self.errors:
            return data
        try:
            data["base_url"] = model_provider_clean(base_url=data.get("base_url") or "")
            data["model_map"] = model_map_clean(model_map=data.get("model_map") or {})
        except SettingInvalid as exc:
            raise forms.ValidationError(exc.message) from exc
        return data


class ModelProviderInline(admin.StackedInline):
    model = ModelProviderConfig
    form = ModelProviderAdminForm
    extra = 0
    max_num = 1
    fields = ["base_url", "api_key", "model_map", "has_key", "updated_at"]
    readonly_fields = ["has_key", "updated_at"]
    verbose_name = "own model provider"

    @admin.display(description="API key stored", boolean=True)
    def has_key(self, obj: ModelProviderConfig) -> bool:
        return obj.has_api_key


SANDBOX_INLINES = [
    OrganizationVariableInline,
    EgressAllowedHostInline,
    AllowedOriginInline,
    ModelProviderInline,
]


def sandbox_formset_save(*, formset: BaseInlineFormSet, actor: Actor) -> bool:
    """Save one of the inlines above through the services; False when `formset` is not one of them."""
    organization = formset.instance
    # The admin's change message reads these after saving; they name objects, never values.
    formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
    if formset.model is OrganizationVariable:
        for form in formset.forms:
            if form in formset.deleted_forms:
                if form.instance.pk:
                    variable_delete(variable=form.instance, actor=actor)
                    formset.deleted_objects.append(form.instance)
                continue
            fields = form.cleaned_data.get("cleaned_variable") if form.has_changed() else None
            if fields is None:
                continue
            if form.instance.pk and form.initial.get("key") != fields.key:  # renamed in the admin
                variable_delete(variable=OrganizationVariable.objects.get(pk=form.instance.pk), actor=actor)
            variable, created = variable_set(
                organization=organization,
                key=fields.key,
                value=fields.value,
                is_secret=fields.is_secret,
                inject_header=fields.inject_header,
                inject_prefix=fields.inject_prefix,
                inject_hosts=fields.inject_hosts,
                actor=actor,
            )
            if created:
                formset.new_objects.append(variable)
            else:
                formset.changed_objects.append((variable, form.changed_data))
        return True
    if formset.model is EgressAllowedHost:
        for form in formset.forms:
            deleted = form in formset.deleted_forms
            if form.instance.pk and (deleted or "pattern" in form.changed_data):
                egress_host_remove(host=EgressAllowedHost.objects.get(pk=form.instance.pk), actor=actor)
            if not deleted and form.has_changed() and form.cleaned_data.get("pattern"):
                egress_host_add(organization=organization, pattern=form.cleaned_data["pattern"], actor=actor)
        return True
    if formset.model is AllowedOrigin:
        for form in formset.forms:
            deleted = form in formset.deleted_forms
            if form.instance.pk and (deleted or "origin" in form.changed_data):
                allowed_origin_remove(allowed=AllowedOrigin.objects.get(pk=form.instance.pk), actor=actor)
            if not deleted and form.has_changed() and form.cleaned_data.get("origin"):
                allowed_origin_add(organization=organization, origin=form.cleaned_data["origin"], actor=actor)
        return True
    if formset.model is ModelProviderConfig:
        for form in formset.forms:
            if form in formset.deleted_forms:
                model_provider_clear(organization=organization, actor=actor)
                continue
            if form.has_changed():
                model_provider_set(
                    organization=organization,
                    base_url=form.cleaned_data.get("base_url") or "",
                    model_map=form.cleaned_data.get("model_map") or {},
                    api_key=form.cleaned_data.get("api_key") or None,
                    actor=actor,
                )
        return True
    return False
