"""`/usage/`: each quota's used / limit, and the daily runs and sandbox CPU of the last 30 days as charts."""

from __future__ import annotations

from typing import Any

from django.views.generic import TemplateView

from dashboard.quota_display import quota_rows
from dashboard.scoping import OrganizationPageMixin
from organizations.quotas import DAILY_SERIES_DAYS, usage_daily_series


class UsageView(OrganizationPageMixin, TemplateView):
    template_name = "dashboard/usage.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        daily = usage_daily_series(organization=self.organization)
        labels = [day["date"] for day in daily]
        # dashboard/assets/charts.js draws these ({% json_script %} data, one chart per element).
        context["runs_chart"] = {
            "labels": labels,
            "series": [{"label": "Runs", "values": [d["runs"] for d in daily]}],
        }
        context["cpu_chart"] = {
            "labels": labels,
            "series": [{"label": "Sandbox CPU (s)", "values": [d["sandbox_cpu_ms"] / 1000 for d in daily]}],
        }
        context.update(
            quotas=quota_rows(self.organization),
            daily=daily,
            days=DAILY_SERIES_DAYS,
            total_runs=sum(d["runs"] for d in daily),
            total_cpu_ms=sum(d["sandbox_cpu_ms"] for d in daily),
        )
        return context
