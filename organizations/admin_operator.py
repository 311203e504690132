"""Operator actions in the organization admin: suspend, reactivate, reset the quota period, cancel runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from organizations.models import Organization
from organizations.operations import (
    ReasonRequired,
    org_cancel_runs,
    org_reactivate,
    org_reset_quota_period,
    org_suspend,
)
from organizations.quotas import quota_usage
from organizations.services import Actor


class ReasonActionForm(ActionForm):
    """The action menu plus the reason every operator action records."""

    reason = forms.CharField(required=False, label="Reason", widget=forms.TextInput(attrs={"size": 40}))


def _operator(request: HttpRequest) -> Actor:
    user = cast(User, request.user)  # the admin only serves signed-in staff
    return Actor.operator(label=f"operator:{user.get_username()}", user=user)


def _reason(request: HttpRequest) -> str:
    return str(request.POST.get("reason", "")).strip()


class OrganizationOperatorActions:
    """Mixed into OrganizationAdmin: the operator actions and the usage panel."""

    action_form = ReasonActionForm
    actions: Sequence[Any] | None = ["suspend", "reactivate", "reset_quota_period", "cancel_active_runs"]

    def _each(self, request: HttpRequest, queryset: QuerySet[Organization], verb: str, call: Any) -> None:
        reason = _reason(request)
        if verb != "reactivated" and not reason:
            cast(admin.ModelAdmin, self).message_user(
                request, "Type a reason next to the action menu: it goes in the audit log.", messages.ERROR
            )
            return
        try:
            for organization in queryset:
                call(organization=organization, actor=_operator(request), reason=reason)
        except ReasonRequired as exc:
            cast(admin.ModelAdmin, self).message_user(request, exc.message, messages.ERROR)
            return
        cast(admin.ModelAdmin, self).message_user(request, f"{queryset.count()} organization(s) {verb}.")

    @admin.action(description="Suspend (refuse API and websockets, cancel runs)")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        """Suspend the selected organizations."""
        self._each(request, queryset, "suspended", org_suspend)

    @admin.action(description="Reactivate")
    def reactivate(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        """Lift the suspension of the selected organizations."""
        self._each(request, queryset, "reactivated", org_reactivate)

    @admin.action(description="Reset quota period (zero this month's usage)")
    def reset_quota_period(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        """Zero this month's metered usage of the selected organizations."""
        self._each(request, queryset, "reset", org_reset_quota_period)

    @admin.action(description="Cancel queued and running runs")
    def cancel_active_runs(self, request: HttpRequest, queryset: QuerySet[Organization]) -> None:
        """Cancel every active run of the selected organizations."""
        self._each(request, queryset, "had their runs cancelled", org_cancel_runs)

    @admin.display(description="Usage this period")
    def usage_panel(self, obj: Organization) -> str:
        """Used / limit per quota, with reset times, as a small table."""
        if obj.pk is None:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    row.quota,
                    row.used,
                    row.limit,
                    row.resets_at.strftime("%Y-%m-%d %H:%M UTC") if row.resets_at else "—",
                )
                for row in quota_usage(organization=obj)
            ),
        )
        return format_html(
            '<table class="lightfast-usage"><thead><tr><th scope="col">Quota</th><th scope="col">Used</th>'
            '<th scope="col">Limit</th><th scope="col">Resets</th></tr></thead><tbody>{}</tbody></table>',
            rows,
        )
