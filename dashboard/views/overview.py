"""`/`: the organization at a glance: its bundles, its recent runs and each quota's use."""

from __future__ import annotations

from typing import Any

from django.views.generic import TemplateView

from agents.models import Bundle
from dashboard.quota_display import quota_rows
from dashboard.scoping import OrganizationPageMixin
from execution.models import Run

RECENT_RUNS = 10


class OverviewView(OrganizationPageMixin, TemplateView):
    template_name = "dashboard/overview.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["bundles"] = list(
            self.scoped(Bundle.objects.live().select_related("active_version")).order_by("slug")
        )
        context["runs"] = recent_runs(self)
        context["quotas"] = quota_rows(self.organization)
        return context


class RecentRunsFragment(OrganizationPageMixin, TemplateView):
    """`/overview/runs/`: the overview's recent runs, which htmx polls every few seconds."""

    template_name = "dashboard/partials/recent_runs.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["runs"] = recent_runs(self)
        return context


def recent_runs(page: OrganizationPageMixin) -> list[Run]:
    """The organization's last runs, newest first."""
    runs = page.scoped(Run.objects.select_related("bundle_version__bundle")).order_by("-created_at")
    return list(runs[:RECENT_RUNS])
