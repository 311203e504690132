"""Quotas hold under concurrency (slots, monthly runs, CPU, tokens); slots come back however runs end."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from execution.models import Run, RunStatus
from execution.services import run_cancel, run_execute, run_reap_lost, run_start
from organizations.models import Organization, OrganizationUsage
from organizations.quotas import QuotaExceeded, quota_run_check, quota_usage
from tests.bundles import manifest_version


def _limits(organization: Organization, **limits: Any) -> None:
    Organization.objects.filter(pk=organization.pk).update(**limits)
    organization.refresh_from_db()


def _start(organization: Organization, version: Any) -> Run:
    return run_start(organization=organization, bundle_version=version, agent_key="weather", text="hi")


def _start_concurrently(
    organization: Organization, version: Any, count: int
) -> tuple[list[Run], list[Exception]]:
    started: list[Run] = []
    refused: list[Exception] = []
    lock = threading.Lock()
    barrier = threading.Barrier(count)

    def start() -> None:
        try:
            barrier.wait()
            run = _start(organization, version)
            with lock:
                started.append(run)
        except QuotaExceeded as exc:
            with lock:
                refused.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return started, refused


def _active(organization: Organization) -> int:
    return OrganizationUsage.objects.get(organization=organization).active_runs


@pytest.mark.django_db(transaction=True)
def test_50_concurrent_starts_against_10_concurrent_runs(alice, bob):
    _limits(alice.organization, concurrent_runs=10)
    version = manifest_version(alice.organization)
    started, refused = _start_concurrently(alice.organization, version, 50)
    assert len(started) == 10 and len(refused) == 40
    assert Run.objects.filter(organization=alice.organization).count() == 10
    assert {exc.quota for exc in refused} == {"concurrent_runs"}
    detail = refused[0].detail
    assert detail["limit"] == 10 and detail["used"] == 10 and detail["resets_at"] is None
    assert _active(alice.organization) == 10

    # Bob is not limited by Alice's full slots.
    _start(bob.organization, manifest_version(bob.organization))

    for run in started:
        run_cancel(run=run)
    assert _active(alice.organization) == 0
    again, refused_again = _start_concurrently(alice.organization, version, 15)
    assert len(again) == 10 and len(refused_again) == 5


@pytest.mark.django_db(transaction=True)
def test_monthly_run_quota_admits_exactly_n_under_concurrency(alice):
    _limits(alice.organization, runs_per_month=7, concurrent_runs=1000)
    version = manifest_version(alice.organization)
    started, refused = _start_concurrently(alice.organization, version, 30)
    assert len(started) == 7 and len(refused) == 23
    exc = refused[0]
    assert exc.quota == "runs_per_month" and exc.http_status == 403 and exc.code == "quota_exceeded"
    assert exc.detail["limit"] == 7
    assert exc.detail["resets_at"].endswith("T00:00:00+00:00")
    assert "runs_per_month" in exc.message and "resets at" in exc.message
    # Cancelling gives back the concurrent slot, not the monthly run.
    run_cancel(run=started[0])
    with pytest.raises(QuotaExceeded):
        _start(alice.organization, version)


def test_slot_is_released_when_a_run_finishes_and_usage_is_metered(alice):
    _limits(alice.organization, concurrent_runs=1)
    version = manifest_version(alice.organization)
    run = _start(alice.organization, version)
    with pytest.raises(QuotaExceeded) as refused:
        _start(alice.organization, version)
    assert refused.value.quota == "concurrent_runs"
    assert run_execute(run_id=run.pk, worker="test") is True  # the demo model answers in-process
    run.refresh_from_db()
    assert run.is_terminal
    assert _active(alice.organization) == 0
    used = {row.quota: row.used for row in quota_usage(organization=alice.organization)}
    assert used["runs_per_month"] == 1
    assert used["model_tokens_per_month"] == run.input_tokens + run.output_tokens > 0
    _start(alice.organization, version)


def test_slot_is_released_when_the_reaper_ends_a_lost_run(alice):
    _limits(alice.organization, concurrent_runs=1)
    version = manifest_version(alice.organization)
    run = _start(alice.organization, version)
    # The worker claimed it, then died: its heartbeat is long stale. It had used its last attempt,
    # so the reaper ends it (a retried run keeps its slot: tests/execution/test_lost_runs.py).
    stale = timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(
        status=RunStatus.RUNNING,
        started_at=stale,
        heartbeat_at=stale,
        attempt=settings.LIGHTFAST_RUN_MAX_ATTEMPTS,
    )
    assert run_reap_lost() == {"retried": 0, "failed": 1}
    assert _active(alice.organization) == 0
    # Reaping twice (or the worker finishing late) does not give a slot back twice.
    assert run_reap_lost() == {"retried": 0, "failed": 0}
    _start(alice.organization, version)
    assert _active(alice.organization) == 1


def test_monthly_cpu_and_token_quotas_refuse_new_runs(alice):
    version = manifest_version(alice.organization)
    run = _start(alice.organization, version)
    run_execute(run_id=run.pk, worker="test")
    _limits(alice.organization, model_tokens_per_month=1)
    with pytest.raises(QuotaExceeded) as refused:
        _start(alice.organization, version)
    assert refused.value.quota == "model_tokens_per_month"
    # The refused start left no run and took no slot.
    assert Run.objects.filter(organization=alice.organization).count() == 1
    assert _active(alice.organization) == 0


def test_the_read_only_check_refuses_what_a_start_would_refuse(alice):
    """`quota_run_check` (the SSE chat's check before its head): the same quota, limit and use."""
    organization = alice.organization
    version = manifest_version(organization)
    quota_run_check(organization=organization)  # no usage row of the period or of running runs yet
    _limits(organization, concurrent_runs=1)
    _start(organization, version)
    for quota, limits in (
        ("concurrent_runs", {}),
        ("runs_per_month", {"runs_per_month": 1}),
    ):
        _limits(organization, **limits)
        with pytest.raises(QuotaExceeded) as checked:
            quota_run_check(organization=organization)
        with pytest.raises(QuotaExceeded) as started:
            _start(organization, version)
        assert checked.value.quota == started.value.quota == quota
        assert checked.value.detail == started.value.detail
    assert Run.objects.filter(organization=organization).count() == 1


def test_per_run_wall_limit_is_bounded_by_the_platform_maximum(alice, settings):
    settings.LIGHTFAST_MAX_RUN_WALL_MS = 5_000
    run = _start(alice.organization, manifest_version(alice.organization))
    assert run.wall_limit_ms == 5_000
