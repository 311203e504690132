"""The dashboard's forms: every field validated on the server, errors shown next to the field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Q

from lightfast_cloud.errors import LightfastError
from organizations.models import Role, Scope
from organizations.services import user_exists_with_email


def form_add_service_error(form: forms.Form, exc: LightfastError, *, field: str | None = None) -> None:
    """Show a service's refusal on the form: next to `field` (or the field its detail names), else on top."""
    detail = exc.detail if isinstance(exc.detail, dict) else {}
    named = [name for name in detail if name in form.fields]
    target = field if field in form.fields else (named[0] if named else None)
    form.add_error(target, exc.message)


class EmailAuthenticationForm(AuthenticationForm):
    """Sign in with `Email` and `Password` (usernames are emails; matched case-insensitively)."""

    username = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    error_messages = {
        **AuthenticationForm.error_messages,
        "invalid_login": "The email or password is not right.",
    }

    def clean(self) -> dict[str, Any]:
        """Find the account by email whatever its case, then let Django check the password."""
        email = self.cleaned_data.get("username")
        if email:
            user = get_user_model().objects.filter(Q(username__iexact=email) | Q(email__iexact=email)).first()
            if user is not None:
                self.cleaned_data["username"] = user.get_username()
        return super().clean()


class AccountForm(forms.Form):
    """A new account: Email and Password (validated by the project's password validators)."""

    email = forms.EmailField(
        label="Email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "autofocus": True}),
    )
    password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )

    def clean_email(self) -> str:
        email: str = get_user_model().objects.normalize_email(self.cleaned_data["email"].strip())
        if user_exists_with_email(email=email):
            raise forms.ValidationError("An account with this email already exists. Sign in instead.")
        return email

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        password, email = cleaned.get("password"), cleaned.get("email")
        if password:
            user = get_user_model()(username=email or "", email=email or "")
            try:
                password_validation.validate_password(password, user)
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class SignupForm(AccountForm):
    """A new account and the organization it owns."""

    organization = forms.CharField(
        label="Organization",
        max_length=200,
        help_text="Your team's or company's name; you can rename it later.",
    )

    def clean_organization(self) -> str:
        name: str = self.cleaned_data["organization"].strip()
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name


class OrganizationForm(forms.Form):
    """A new organization for the signed-in user."""

    name = forms.CharField(label="Organization", max_length=200)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name


# --- settings -----------------------------------------------------------------------------------------


class ApiKeyForm(forms.Form):
    """A new API key (the REST API's `POST /api-keys` fields)."""

    name = forms.CharField(label="Key name", max_length=100)
    scopes = forms.MultipleChoiceField(
        label="Permissions",
        choices=Scope.choices,
        initial=[Scope.READ, Scope.EXECUTE],
        widget=forms.CheckboxSelectMultiple,
        help_text="Read: list and fetch. Write: change bundles and settings. Execute: run agents and tools.",
    )
    expires_in_days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=3650,
        required=False,
        help_text="Leave empty for a key that does not expire.",
    )


class InvitationForm(forms.Form):
    """An invitation link for a new member."""

    role = forms.ChoiceField(label="Role", choices=Role.choices, initial=Role.MEMBER)
    email = forms.EmailField(
        label="Only for this email",
        required=False,
        help_text="Optional: then only the account with this email can accept the link.",
    )


class MemberRoleForm(forms.Form):
    """A member's new role."""

    role = forms.ChoiceField(label="Role", choices=Role.choices)


class EgressHostForm(forms.Form):
    """A host the organization's sandbox code may fetch from."""

    pattern = forms.CharField(
        label="Host",
        max_length=253,
        help_text="An exact host (api.example.com) or every subdomain of one (*.example.com).",
    )


class AllowedOriginForm(forms.Form):
    """A browser origin whose pages may call the API."""

    origin = forms.CharField(
        label="Origin", max_length=300, help_text="https://app.example.com (http only for localhost)."
    )


def _host_list(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


class VariableForm(forms.Form):
    """A variable (`process.env` in the sandbox) or a write-only secret (a header the host adds)."""

    key = forms.CharField(
        label="Name", max_length=128, help_text="Letters, digits and _, e.g. WEATHER_API_KEY."
    )
    value = forms.CharField(
        label="Value",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}, render_value=False),
        help_text="A secret's value is never shown again; leave it empty to keep a stored secret's value.",
    )
    is_secret = forms.BooleanField(
        label="Secret (never enters the sandbox; sent as a header to its hosts)", required=False
    )
    inject_header = forms.CharField(
        label="Header", max_length=100, required=False, help_text="e.g. Authorization"
    )
    inject_prefix = forms.CharField(
        label="Header prefix", max_length=50, required=False, strip=False, help_text='e.g. "Bearer "'
    )
    inject_hosts = forms.CharField(
        label="Hosts that receive the secret",
        required=False,
        help_text="Comma-separated, exact or *.domain; each must also be on the egress allow-list.",
    )

    def clean_inject_hosts(self) -> list[str]:
        return _host_list(self.cleaned_data.get("inject_hosts") or "")


class ModelProviderForm(forms.Form):
    """The organization's own OpenAI-compatible model provider."""

    base_url = forms.CharField(
        label="Base URL",
        max_length=500,
        required=False,
        help_text="An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1. Empty: the platform's.",
    )
    api_key = forms.CharField(
        label="Provider API key",
        required=False,
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}, render_value=False),
        help_text="Write-only. Leave empty to keep the stored key (changing the URL drops it).",
    )
    model_map = forms.JSONField(
        label="Model map (JSON)",
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text='Bundle model id to provider model, e.g. {"openai/gpt-4o-mini": "gpt-4o-mini"}.',
    )

    def clean_model_map(self) -> Any:
        value = self.cleaned_data.get("model_map")
        return {} if value in (None, "") else value


class OrganizationProfileForm(forms.Form):
    """The organization's name."""

    name = forms.CharField(label="Organization name", max_length=200)
