"""Signing up, in and out, and resetting a forgotten password."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect
from django.urls import reverse_lazy
from django.utils.decorators import method_decorator
from django.views.generic import FormView
from django_ratelimit.decorators import ratelimit

from dashboard.forms import EmailAuthenticationForm, SignupForm, form_add_service_error
from dashboard.scoping import SESSION_ORGANIZATION
from lightfast_cloud.errors import LightfastError
from organizations.ratelimits import client_ip
from organizations.services import account_signup


def _client_ip_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit key: the client address, read as the API's limits read it."""
    return client_ip(request)


def _login_email_key(group: str, request: HttpRequest) -> str:
    """django-ratelimit key: the email being tried, whatever its case."""
    return request.POST.get("username", "").strip().lower()


def _signup_rate(group: str, request: HttpRequest) -> str:
    return str(settings.LIGHTFAST_SIGNUP_RATE)


def _login_rate(group: str, request: HttpRequest) -> str:
    return str(settings.LIGHTFAST_LOGIN_RATE)


# Sign-in attempts per client address and per email (django-ratelimit, counted in Redis).
_login_ratelimits = [
    ratelimit(group="dashboard.login.ip", key=_client_ip_key, rate=_login_rate, method="POST", block=False),
    ratelimit(
        group="dashboard.login.email", key=_login_email_key, rate=_login_rate, method="POST", block=False
    ),
]


@method_decorator(_login_ratelimits, name="post")
class LoginView(auth_views.LoginView):
    """`/accounts/login/`: Email and Password; too many attempts answer 429 with the form."""

    template_name = "accounts/login.html"
    authentication_form = EmailAuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Refuse before checking the password when this address or email tried too often."""
        if getattr(request, "limited", False):
            form = self.get_form()
            form.is_valid()  # field errors still show
            form.add_error(None, "Too many sign-in attempts. Wait a minute and try again.")
            response = self.render_to_response(self.get_context_data(form=form), status=429)
            response["Retry-After"] = "60"
            return response
        return super().post(request, *args, **kwargs)


class LogoutView(auth_views.LogoutView):
    """`/accounts/logout/` (POST): ends the session, and so every websocket and stream it opened."""


class SignupView(FormView):
    """`/accounts/signup/`: Email, Password and Organization; the new user owns the new organization."""

    template_name = "accounts/signup.html"
    form_class = SignupForm

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.user.is_authenticated:
            return redirect("dashboard:overview")
        return super().dispatch(request, *args, **kwargs)

    @method_decorator(
        ratelimit(
            group="dashboard.signup.ip", key=_client_ip_key, rate=_signup_rate, method="POST", block=False
        )
    )
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if getattr(request, "limited", False):
            form = self.get_form()
            form.add_error(None, "Too many sign-ups from this address. Try again later.")
            return self.render_to_response(self.get_context_data(form=form), status=429)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: SignupForm) -> HttpResponse:
        try:
            user, organization = account_signup(
                email=form.cleaned_data["email"],
                password=form.cleaned_data["password"],
                organization_name=form.cleaned_data["organization"],
            )
        except LightfastError as exc:  # a concurrent sign-up took the email
            form_add_service_error(form, exc, field="email")
            return self.form_invalid(form)
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        self.request.session[SESSION_ORGANIZATION] = organization.public_id
        messages.success(self.request, f"Welcome! {organization.name} is ready.")
        return redirect("dashboard:overview")


class PasswordResetView(auth_views.PasswordResetView):
    """`/accounts/password-reset/`: mails a link (the console backend by default)."""

    template_name = "accounts/password_reset.html"
    email_template_name = "accounts/password_reset_email.txt"
    subject_template_name = "accounts/password_reset_subject.txt"
    success_url = reverse_lazy("dashboard:password-reset-done")


class PasswordResetDoneView(auth_views.PasswordResetDoneView):
    template_name = "accounts/password_reset_done.html"


class PasswordResetConfirmView(auth_views.PasswordResetConfirmView):
    template_name = "accounts/password_reset_confirm.html"
    success_url = reverse_lazy("dashboard:password-reset-complete")


class PasswordResetCompleteView(auth_views.PasswordResetCompleteView):
    template_name = "accounts/password_reset_complete.html"
