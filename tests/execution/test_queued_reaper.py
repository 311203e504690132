"""Runs whose task the broker lost: the reaper enqueues them again, or fails them and frees their slot."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from execution.models import Run, RunStatus
from execution.services import run_reap_queued, run_start
from lightfast_cloud.celery import app
from organizations.models import OrganizationUsage
from tests.bundles import manifest_version
from tests.services import start_celery_worker

pytestmark = pytest.mark.django_db(transaction=True)


def _purge_runs_queue() -> int:
    """Drop every waiting `execute_run` message, as a broker that lost them would."""
    with app.connection_for_write() as connection:
        return int(connection.default_channel.queue_purge("runs") or 0)


@pytest.fixture
def empty_runs_queue(redis_server: str) -> Iterator[None]:
    """The runs queue is empty before and after the test (no stray task reaches a later worker)."""
    _purge_runs_queue()
    yield
    _purge_runs_queue()


def _slots(organization: Any) -> int:
    return OrganizationUsage.objects.get(organization=organization).active_runs


def test_a_run_whose_task_was_lost_is_enqueued_again_and_runs(alice: Any, empty_runs_queue: None) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    assert _purge_runs_queue() == 1  # the broker loses the task: no worker will ever see it
    worker = start_celery_worker()
    try:
        assert run_reap_queued() == {"requeued": 0, "failed": 0}  # not yet overdue
        later = timezone.now() + timedelta(seconds=settings.LIGHTFAST_RUN_REQUEUE_S + 1)
        assert run_reap_queued(now=later) == {"requeued": 1, "failed": 0}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.is_terminal:
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    assert run.status == RunStatus.SUCCEEDED, (run.status, run.error_type, run.error_message)
    assert run.requeue_count == 1
    assert _slots(alice.organization) == 0
    seqs = list(run.events.values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))


def test_re_enqueueing_waits_a_full_interval_each_time(alice: Any, empty_runs_queue: None) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    interval = timedelta(seconds=settings.LIGHTFAST_RUN_REQUEUE_S)
    start = timezone.now()
    assert run_reap_queued(now=start + interval / 2)["requeued"] == 0
    assert run_reap_queued(now=start + interval * 1.1)["requeued"] == 1
    assert run_reap_queued(now=start + interval * 1.5)["requeued"] == 0
    assert run_reap_queued(now=start + interval * 2.2)["requeued"] == 1
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.requeue_count == 2
    assert _slots(alice.organization) == 1


def test_a_run_queued_too_long_fails_and_gives_its_slot_back(
    alice: Any, bob: Any, empty_runs_queue: None
) -> None:
    version = manifest_version(alice.organization)
    bobs = manifest_version(bob.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    running = run_start(organization=bob.organization, bundle_version=bobs, agent_key="weather", text="hi")
    Run.objects.filter(pk=running.pk).update(status=RunStatus.RUNNING, heartbeat_at=timezone.now())
    assert _slots(alice.organization) == 1
    too_late = timezone.now() + timedelta(seconds=settings.LIGHTFAST_RUN_QUEUED_MAX_S + 1)
    assert run_reap_queued(now=too_late) == {"requeued": 0, "failed": 1}
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_type == "worker_lost"
    assert "No worker started the run" in run.error_message
    assert _slots(alice.organization) == 0
    events = [(event.type, event.payload) for event in run.events.order_by("seq")]
    assert [kind for kind, _ in events] == ["error", "data-status"]
    assert events[-1][1]["data"]["status"] == "failed"
    # Once ended, nothing happens again; a running run is the heartbeat reaper's business.
    assert run_reap_queued(now=too_late) == {"requeued": 0, "failed": 0}
    running.refresh_from_db()
    assert running.status == RunStatus.RUNNING and _slots(bob.organization) == 1
