"""`/accounts/invite/<token>/`: accepting an invitation link, signed in or by signing up there."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views import View

from dashboard.forms import AccountForm, form_add_service_error
from dashboard.scoping import SESSION_ORGANIZATION
from lightfast_cloud.errors import LightfastError
from organizations.models import Invitation
from organizations.selectors import invitation_for_token
from organizations.services import invitation_accept, user_create

TEMPLATE = "accounts/invitation.html"


class InvitationView(View):
    """GET: who invites you to what; POST: accept it (signed in), or sign up and accept."""

    def get(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = invitation_for_token(token=token)
        if invitation is None or invitation.status != "pending":
            return self._unusable(request, invitation)
        form = None if request.user.is_authenticated else AccountForm(initial={"email": invitation.email})
        return render(request, TEMPLATE, {"invitation": invitation, "form": form, "token": token})

    def post(self, request: HttpRequest, token: str) -> HttpResponse:
        invitation = invitation_for_token(token=token)
        if invitation is None or invitation.status != "pending":
            return self._unusable(request, invitation)
        form = None
        try:
            if request.user.is_authenticated:
                membership = invitation_accept(token=token, user=request.user)  # type: ignore[arg-type]
            else:
                form = AccountForm(request.POST)
                if not form.is_valid():
                    return self._page(request, invitation, token, form)
                with transaction.atomic():
                    user = user_create(
                        email=form.cleaned_data["email"], password=form.cleaned_data["password"]
                    )
                    membership = invitation_accept(token=token, user=user)
                login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        except LightfastError as exc:
            if form is None:
                messages.error(request, exc.message)
                return self._page(request, invitation, token, None)
            form_add_service_error(form, exc, field="email")
            return self._page(request, invitation, token, form)
        request.session[SESSION_ORGANIZATION] = membership.organization.public_id
        messages.success(request, f"Welcome to {membership.organization.name}.")
        return redirect("dashboard:overview")

    def _page(self, request: HttpRequest, invitation: Invitation, token: str, form: Any) -> HttpResponse:
        """The invitation again with the form's errors (200, as every form with errors here)."""
        return render(request, TEMPLATE, {"invitation": invitation, "form": form, "token": token})

    def _unusable(self, request: HttpRequest, invitation: Invitation | None) -> HttpResponse:
        status = invitation.status if invitation is not None else "unknown"
        return render(request, "accounts/invitation_unusable.html", {"status": status}, status=404)
