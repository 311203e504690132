"""Quotas as people read them: a label, used and limit in their unit, and the share used (for a meter)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.template.defaultfilters import filesizeformat

from organizations.models import Organization
from organizations.quotas import (
    QUOTA_BUNDLE_STORAGE,
    QUOTA_CONCURRENT_RUNS,
    QUOTA_MODEL_TOKENS,
    QUOTA_RUNS_PER_MONTH,
    QUOTA_SANDBOX_CPU_MS,
    quota_usage,
)

QUOTA_LABELS = {
    QUOTA_RUNS_PER_MONTH: "Runs this month",
    QUOTA_SANDBOX_CPU_MS: "Sandbox CPU this month",
    QUOTA_MODEL_TOKENS: "Model tokens this month",
    QUOTA_CONCURRENT_RUNS: "Runs at once",
    QUOTA_BUNDLE_STORAGE: "Bundle storage",
}


@dataclass(frozen=True)
class QuotaRow:
    quota: str
    label: str
    used: int
    limit: int
    used_text: str
    limit_text: str
    resets_at: datetime | None

    @property
    def percent(self) -> int:
        """Share of the limit used, 0–100."""
        if self.limit <= 0:
            return 100 if self.used else 0
        return min(100, round(100 * self.used / self.limit))


def _amount(quota: str, value: int) -> str:
    if quota == QUOTA_BUNDLE_STORAGE:
        return str(filesizeformat(value))
    if quota == QUOTA_SANDBOX_CPU_MS:
        return f"{value / 1000:,.1f} s"
    return f"{value:,}"


def quota_rows(organization: Organization) -> list[QuotaRow]:
    """Every quota of the organization for the current period, readable."""
    return [
        QuotaRow(
            quota=row.quota,
            label=QUOTA_LABELS.get(row.quota, row.quota.replace("_", " ")),
            used=row.used,
            limit=row.limit,
            used_text=_amount(row.quota, row.used),
            limit_text=_amount(row.quota, row.limit),
            resets_at=row.resets_at,
        )
        for row in quota_usage(organization=organization)
    ]
