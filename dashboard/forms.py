"""The dashboard's forms: every field validated on the server, errors shown next to the field."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Q

from lightfast_cloud.errors import LightfastError
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


class SignupForm(forms.Form):
    """A new account and the organization it owns."""

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
    organization = forms.CharField(
        label="Organization",
        max_length=200,
        help_text="Your team's or company's name; you can rename it later.",
    )

    def clean_email(self) -> str:
        email: str = get_user_model().objects.normalize_email(self.cleaned_data["email"].strip())
        if user_exists_with_email(email=email):
            raise forms.ValidationError("An account with this email already exists. Sign in instead.")
        return email

    def clean_organization(self) -> str:
        name: str = self.cleaned_data["organization"].strip()
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name

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


class OrganizationForm(forms.Form):
    """A new organization for the signed-in user."""

    name = forms.CharField(label="Organization", max_length=200)

    def clean_name(self) -> str:
        name: str = self.cleaned_data["name"].strip()
        if not any(ch.isalnum() for ch in name):
            raise forms.ValidationError("Use at least one letter or digit.")
        return name
