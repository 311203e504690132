"""Quotas: per-organization limits enforced atomically in the database, and the usage report."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Count, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from lightfast_cloud import sql
from lightfast_cloud.errors import LightfastError
from organizations.models import MonthlyUsage, Organization, OrganizationUsage

QUOTA_RUNS_PER_MONTH = "runs_per_month"
QUOTA_CONCURRENT_RUNS = "concurrent_runs"
QUOTA_SANDBOX_CPU_MS = "sandbox_cpu_ms_per_month"
QUOTA_MODEL_TOKENS = "model_tokens_per_month"
QUOTA_BUNDLE_STORAGE = "bundle_storage_bytes"
QUOTA_MAX_BUNDLE = "max_bundle_bytes"

# Monthly quota -> the MonthlyUsage column that meters it.
MONTHLY_COLUMNS: dict[str, str] = {
    QUOTA_RUNS_PER_MONTH: "runs",
    QUOTA_SANDBOX_CPU_MS: "sandbox_cpu_ms",
    QUOTA_MODEL_TOKENS: "model_tokens",
}
# Run statuses that hold a concurrent-run slot (execution.models.RunStatus values; this app may not
# import execution).
ACTIVE_RUN_STATUSES = ("queued", "running")
DAILY_SERIES_DAYS = 30


class QuotaExceeded(LightfastError):
    """A quota is used up: names the quota, its limit, what is used and when it resets."""

    code = "quota_exceeded"
    default_message = "A quota of this organization is used up."

    def __init__(self, *, quota: str, limit: int, used: int, resets_at: datetime | None) -> None:
        when = f"; it resets at {resets_at.isoformat()}" if resets_at else ""
        super().__init__(
            f"Quota {quota} exceeded: limit {limit}, used {used}{when}.",
            detail={
                "quota": quota,
                "limit": limit,
                "used": used,
                "resets_at": resets_at.isoformat() if resets_at else None,
            },
        )
        self.quota = quota


class RunLimitAboveMaximum(LightfastError):
    """A per-run limit above the platform's maximum."""

    code = "invalid_input"
    default_message = "A per-run limit is above the platform maximum."


# --- periods ------------------------------------------------------------------------------------


def period_start(now: datetime | None = None) -> date:
    """First day (UTC) of the month containing `now`."""
    now = (now or timezone.now()).astimezone(UTC)
    return now.date().replace(day=1)


def period_resets_at(start: date) -> datetime:
    """When the period beginning on `start` ends: midnight UTC on the first of the next month."""
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def _ensure_monthly_row(organization_id: int, start: date) -> None:
    # ON CONFLICT DO NOTHING: concurrent first requests of a month create exactly one row.
    MonthlyUsage.objects.bulk_create(
        [MonthlyUsage(organization_id=organization_id, period_start=start)], ignore_conflicts=True
    )


def _ensure_usage_row(organization_id: int) -> None:
    OrganizationUsage.objects.bulk_create(
        [OrganizationUsage(organization_id=organization_id)], ignore_conflicts=True
    )


# --- runs -----------------------------------------------------------------------------------------


def quota_run_started(
    *, organization: Organization, now: datetime | None = None, savepoint: bool = True
) -> None:
    """Take a concurrent-run slot and count a run this month, or raise QuotaExceeded naming the quota.

    Call inside the transaction that creates the run, so a failed start gives both back.
    Monthly row first, then the slot (the module's lock order). With `savepoint` (the default)
    a caller that catches the refusal keeps its transaction, and the monthly count taken before
    a refused slot is given back; `savepoint=False` is for a caller whose whole transaction
    fails with the refusal anyway (`run_start`), and saves the savepoint's two statements.
    """
    start = period_start(now)
    limits = {name: int(getattr(organization, name)) for name in MONTHLY_COLUMNS}
    with transaction.atomic(savepoint=savepoint):
        if not _monthly_count_run(organization.pk, start, limits):
            _ensure_monthly_row(organization.pk, start)
            if not _monthly_count_run(organization.pk, start, limits):
                row = MonthlyUsage.objects.get(organization=organization, period_start=start)
                for name, column in MONTHLY_COLUMNS.items():
                    used = int(getattr(row, column))
                    if used >= limits[name]:
                        raise QuotaExceeded(
                            quota=name, limit=limits[name], used=used, resets_at=period_resets_at(start)
                        )
                raise AssertionError("conditional update refused a row below every limit")
        concurrent_limit = int(organization.concurrent_runs)
        if not _slot_take(organization.pk, concurrent_limit):
            _ensure_usage_row(organization.pk)
            if not _slot_take(organization.pk, concurrent_limit):
                used = OrganizationUsage.objects.get(organization=organization).active_runs
                # No fixed reset time: a slot frees as soon as one of the running runs ends.
                raise QuotaExceeded(
                    quota=QUOTA_CONCURRENT_RUNS, limit=concurrent_limit, used=used, resets_at=None
                )


def quota_run_check(*, organization: Organization, now: datetime | None = None) -> None:
    """Raise the QuotaExceeded `quota_run_started` would raise now, without taking anything (one read).

    For a caller that answers before it starts the run (the SSE chat sends its response head first):
    a used-up quota is still refused with its status. `quota_run_started`, in the start's own
    transaction, stays the authority: a start that loses the last slot to another meanwhile is
    refused there.
    """
    start = period_start(now)
    table, runs, cpu, tokens, org, period = _quoted(
        MonthlyUsage, "runs", "sandbox_cpu_ms", "model_tokens", "organization", "period_start"
    )
    usage_table, active, usage_org = _quoted(OrganizationUsage, "active_runs", "organization")
    # One statement: the period's counters (none before its first run) and the running runs.
    row = sql.fetch_one(
        f"SELECT {runs}, {cpu}, {tokens}, (SELECT {active} FROM {usage_table} WHERE {usage_org} = %s)"  # noqa: S608
        f" FROM (SELECT 1) AS one LEFT JOIN {table} ON {org} = %s AND {period} = %s",
        [organization.pk, organization.pk, sql.prep_value(MonthlyUsage, "period_start", start)],
    ) or (0, 0, 0, 0)
    for (name, _), used in zip(MONTHLY_COLUMNS.items(), row[:3], strict=True):
        limit = int(getattr(organization, name))
        if int(used or 0) >= limit:
            raise QuotaExceeded(
                quota=name, limit=limit, used=int(used or 0), resets_at=period_resets_at(start)
            )
    running = int(row[3] or 0)
    limit = int(organization.concurrent_runs)
    if running >= limit:
        raise QuotaExceeded(quota=QUOTA_CONCURRENT_RUNS, limit=limit, used=running, resets_at=None)


# The counter updates below run on every run start and end, so they are plain SQL (the ORM
# compiling `filter().update(F() + 1)` cost more CPU than the statement itself); each is the
# same conditional UPDATE the module docstring describes. Identifiers come from the models'
# metadata and every value is a parameter (hence the S608 exemptions).


def _quoted(model: type[models.Model], *names: str) -> tuple[str, ...]:
    """The quoted table and columns (resolved once per database vendor: these run inside the write lock)."""
    return _quoted_for(sql.vendor(), model, names)


@functools.cache
def _quoted_for(vendor: str, model: type[models.Model], names: tuple[str, ...]) -> tuple[str, ...]:
    return (sql.table_for(vendor, model), *(sql.column_for(vendor, model, name) for name in names))


def _monthly_count_run(organization_id: int, start: date, limits: dict[str, int]) -> bool:
    """runs + 1 on the organization's row of the period, if every monthly quota is below its limit."""
    table, runs, cpu, tokens, org, period = _quoted(
        MonthlyUsage, "runs", "sandbox_cpu_ms", "model_tokens", "organization", "period_start"
    )
    statement = (
        f"UPDATE {table} SET {runs} = {runs} + 1 WHERE {org} = %s AND {period} = %s"  # noqa: S608
        f" AND {runs} < %s AND {cpu} < %s AND {tokens} < %s"
    )
    params = [
        organization_id,
        sql.prep_value(MonthlyUsage, "period_start", start),
        limits[QUOTA_RUNS_PER_MONTH],
        limits[QUOTA_SANDBOX_CPU_MS],
        limits[QUOTA_MODEL_TOKENS],
    ]
    return sql.execute(statement, params) > 0


def _slot_take(organization_id: int, limit: int) -> bool:
    """active_runs + 1 if below `limit`."""
    table, active, org = _quoted(OrganizationUsage, "active_runs", "organization")
    statement = f"UPDATE {table} SET {active} = {active} + 1 WHERE {org} = %s AND {active} < %s"  # noqa: S608
    return sql.execute(statement, [organization_id, limit]) > 0


def _slot_release(organization_id: int) -> None:
    """active_runs - 1, never below zero."""
    table, active, org = _quoted(OrganizationUsage, "active_runs", "organization")
    statement = f"UPDATE {table} SET {active} = {active} - 1 WHERE {org} = %s AND {active} > 0"  # noqa: S608
    sql.execute(statement, [organization_id])


def _monthly_add(organization_id: int, start: date, sandbox_cpu_ms: int, model_tokens: int) -> bool:
    """Add metered CPU and tokens to the organization's row of the period; False when it has none."""
    table, cpu, tokens, org, period = _quoted(
        MonthlyUsage, "sandbox_cpu_ms", "model_tokens", "organization", "period_start"
    )
    statement = (
        f"UPDATE {table} SET {cpu} = {cpu} + %s, {tokens} = {tokens} + %s"  # noqa: S608
        f" WHERE {org} = %s AND {period} = %s"
    )
    return (
        sql.execute(
            statement,
            [
                sandbox_cpu_ms,
                model_tokens,
                organization_id,
                sql.prep_value(MonthlyUsage, "period_start", start),
            ],
        )
        > 0
    )


def quota_run_ended(*, run_id: uuid.UUID | str, now: datetime | None = None) -> None:
    """Give back the run's slot and meter its CPU and tokens; call in the run's terminal-update transaction.

    Call it only when the conditional status update actually ended the run, so it runs once per run.
    Reads the usage the run row carries; `quota_run_released` is the same for a caller that has it.
    """
    from django.apps import apps

    run_model = apps.get_model("execution", "Run")
    row = (
        run_model.objects.filter(pk=run_id)
        .values("organization_id", "sandbox_cpu_ms", "input_tokens", "output_tokens")
        .first()
    )
    if row is None:
        return
    quota_run_released(
        organization_id=row["organization_id"],
        sandbox_cpu_ms=int(row["sandbox_cpu_ms"] or 0),
        model_tokens=int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0),
        now=now,
    )


def quota_run_released(
    *, organization_id: int, sandbox_cpu_ms: int, model_tokens: int, now: datetime | None = None
) -> None:
    """Meter a run that just ended and give back its slot, in the module's lock order (monthly, then slot).

    Call in the transaction of the run's terminal update, with the usage that update wrote.
    """
    _meter(organization_id=organization_id, sandbox_cpu_ms=sandbox_cpu_ms, model_tokens=model_tokens, now=now)
    _slot_release(organization_id)


def _meter(*, organization_id: int, sandbox_cpu_ms: int, model_tokens: int, now: datetime | None) -> None:
    if not sandbox_cpu_ms and not model_tokens:
        return
    start = period_start(now)
    # The row exists unless the month turned since the run started: create it only then.
    if not _monthly_add(organization_id, start, sandbox_cpu_ms, model_tokens):
        _ensure_monthly_row(organization_id, start)
        _monthly_add(organization_id, start, sandbox_cpu_ms, model_tokens)


# --- direct tool calls and uploads ---------------------------------------------------------------------


def quota_check_sandbox_cpu(*, organization: Organization, now: datetime | None = None) -> None:
    """Raise QuotaExceeded when this month's sandbox CPU is used up (before a direct tool call)."""
    start = period_start(now)
    used = (
        MonthlyUsage.objects.filter(organization=organization, period_start=start)
        .values_list("sandbox_cpu_ms", flat=True)
        .first()
        or 0
    )
    limit = int(organization.sandbox_cpu_ms_per_month)
    if used >= limit:
        raise QuotaExceeded(
            quota=QUOTA_SANDBOX_CPU_MS, limit=limit, used=used, resets_at=period_resets_at(start)
        )


def quota_meter_sandbox_cpu(*, organization: Organization, cpu_ms: int, now: datetime | None = None) -> None:
    """Add the CPU of sandbox work that is not a run (a direct tool invoke, an upload's introspection)."""
    _meter(organization_id=organization.pk, sandbox_cpu_ms=max(0, int(cpu_ms)), model_tokens=0, now=now)


def quota_reserve_storage(*, organization: Organization, size: int) -> None:
    """Raise QuotaExceeded unless `size` more bytes fit; call in the transaction that inserts the version.

    Locks the organization's usage row until commit, so concurrent uploads to any of its bundles
    check one after another against the sum of the stored versions.
    """
    _ensure_usage_row(organization.pk)
    OrganizationUsage.objects.select_for_update().filter(organization=organization).first()
    used = storage_used(organization=organization)
    limit = int(organization.bundle_storage_bytes)
    if used + size > limit:
        raise QuotaExceeded(quota=QUOTA_BUNDLE_STORAGE, limit=limit, used=used, resets_at=None)


def storage_used(*, organization: Organization) -> int:
    """Bytes of the organization's bundle versions whose files are still stored."""
    from django.apps import apps

    version_model = apps.get_model("agents", "BundleVersion")
    total = version_model.objects.filter(organization=organization, files_deleted_at__isnull=True).aggregate(
        total=Sum("size_bytes")
    )["total"]
    return int(total or 0)


# --- per-run limits -----------------------------------------------------------------------------------

# Organization field -> the setting holding the platform maximum.
RUN_LIMIT_MAXIMUM_SETTINGS: dict[str, str] = {
    "run_cpu_ms": "LIGHTFAST_MAX_RUN_CPU_MS",
    "run_memory_bytes": "LIGHTFAST_MAX_RUN_MEMORY_BYTES",
    "run_wall_ms": "LIGHTFAST_MAX_RUN_WALL_MS",
}


def run_limit_maximum(field: str) -> int:
    """The platform maximum of a per-run limit field."""
    return int(getattr(settings, RUN_LIMIT_MAXIMUM_SETTINGS[field]))


def quota_check_run_limits(*, changes: dict[str, Any]) -> None:
    """Raise RunLimitAboveMaximum when a new per-run limit exceeds the platform maximum."""
    above = {
        field: {"value": int(value), "maximum": run_limit_maximum(field)}
        for field, value in changes.items()
        if field in RUN_LIMIT_MAXIMUM_SETTINGS and int(value) > run_limit_maximum(field)
    }
    if above:
        raise RunLimitAboveMaximum(
            "Per-run limits must not exceed the platform maximums: "
            + ", ".join(f"{field} ≤ {info['maximum']}" for field, info in sorted(above.items()))
            + ".",
            detail=above,
        )


def effective_run_limit(*, organization: Organization, field: str) -> int:
    """The organization's per-run limit, bounded by the platform maximum."""
    return min(int(getattr(organization, field)), run_limit_maximum(field))


# --- operator actions and the usage report ------------------------------------------------------------


@dataclass(frozen=True)
class QuotaUsage:
    """One quota: what is used, the limit and when it resets (None: it does not reset by time)."""

    quota: str
    used: int
    limit: int
    resets_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "quota": self.quota,
            "used": self.used,
            "limit": self.limit,
            "remaining": max(0, self.limit - self.used),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
        }


def active_runs_count(*, organization: Organization) -> int:
    """Runs of the organization that hold a slot now, counted from the Run rows."""
    from django.apps import apps

    run_model = apps.get_model("execution", "Run")
    return int(run_model.objects.filter(organization=organization, status__in=ACTIVE_RUN_STATUSES).count())


def quota_usage(*, organization: Organization, now: datetime | None = None) -> list[QuotaUsage]:
    """Every quota of the organization for the current period."""
    start = period_start(now)
    resets = period_resets_at(start)
    monthly = MonthlyUsage.objects.filter(organization=organization, period_start=start).first()
    active = OrganizationUsage.objects.filter(organization=organization).values_list("active_runs", flat=True)
    rows = [
        QuotaUsage(name, int(getattr(monthly, column, 0) or 0), int(getattr(organization, name)), resets)
        for name, column in MONTHLY_COLUMNS.items()
    ]
    rows.append(
        QuotaUsage(QUOTA_CONCURRENT_RUNS, int(active.first() or 0), int(organization.concurrent_runs), None)
    )
    rows.append(
        QuotaUsage(
            QUOTA_BUNDLE_STORAGE,
            storage_used(organization=organization),
            int(organization.bundle_storage_bytes),
            None,
        )
    )
    return rows


def usage_daily_series(
    *, organization: Organization, days: int = DAILY_SERIES_DAYS, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Runs, sandbox CPU-ms and model tokens per UTC day for the last `days` days, from the Run rows."""
    from django.apps import apps

    run_model = apps.get_model("execution", "Run")
    today = (now or timezone.now()).astimezone(UTC).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    rows = (
        run_model.objects.filter(organization=organization, created_at__gte=since)
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day")
        .annotate(
            runs=Count("pk"),
            sandbox_cpu_ms=Sum("sandbox_cpu_ms"),
            input_tokens=Sum("input_tokens"),
            output_tokens=Sum("output_tokens"),
        )
    )
    by_day = {row["day"]: row for row in rows}
    series = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        row: dict[str, Any] = dict(by_day.get(day) or {})
        series.append(
            {
                "date": day.isoformat(),
                "runs": int(row.get("runs") or 0),
                "sandbox_cpu_ms": int(row.get("sandbox_cpu_ms") or 0),
                "model_tokens": int(row.get("input_tokens") or 0) + int(row.get("output_tokens") or 0),
            }
        )
    return series


def usage_report(*, organization: Organization, now: datetime | None = None) -> dict[str, Any]:
    """The current period's quotas and the daily series: the body of GET /api/v1/usage and `org usage`."""
    start = period_start(now)
    return {
        "organization": organization.slug,
        "period": {"start": start.isoformat(), "resets_at": period_resets_at(start).isoformat()},
        "quotas": {row.quota: row.as_dict() for row in quota_usage(organization=organization, now=now)},
        "limits": {
            "api_rate": organization.api_rate,
            "max_bundle_bytes": int(organization.max_bundle_bytes),
            **{
                field: effective_run_limit(organization=organization, field=field)
                for field in RUN_LIMIT_MAXIMUM_SETTINGS
            },
        },
        "daily": usage_daily_series(organization=organization, now=now),
    }


@transaction.atomic
def quota_period_reset(*, organization: Organization, now: datetime | None = None) -> dict[str, int]:
    """Zero this month's counters and recount the concurrent-run slots from the Run rows; returns old values.

    The caller records the operator action in the audit log.
    """
    start = period_start(now)
    _ensure_monthly_row(organization.pk, start)
    _ensure_usage_row(organization.pk)
    # The module's lock order: monthly row, then the usage row.
    monthly = MonthlyUsage.objects.select_for_update().get(organization=organization, period_start=start)
    usage = OrganizationUsage.objects.select_for_update().get(organization=organization)
    before = {column: int(getattr(monthly, column)) for column in MONTHLY_COLUMNS.values()}
    before["active_runs"] = usage.active_runs
    MonthlyUsage.objects.filter(pk=monthly.pk).update(
        runs=0, sandbox_cpu_ms=0, model_tokens=0, reset_at=now or timezone.now()
    )
    OrganizationUsage.objects.filter(pk=usage.pk).update(
        active_runs=active_runs_count(organization=organization)
    )
    return before
