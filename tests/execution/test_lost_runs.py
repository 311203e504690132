"""Runs whose worker was lost: retried when no tool call had started, failed otherwise, and a worker that
was only stalled cannot write into the attempt that replaced its own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from execution.agent_loop import AssistantTurn, RunCancelled
from execution.events import event_append_many, run_update_with_events
from execution.models import Run, RunStatus
from execution.selectors import run_events_after
from execution.services import run_cancel, run_execute, run_reap_lost, run_start
from execution.services.runs import run_status_event
from lightfast_cloud.celery import app
from organizations.models import OrganizationUsage
from tests.bundles import manifest_version
from tests.execution.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)


def _purge_runs_queue() -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge("runs")


@pytest.fixture(autouse=True)
def _no_stray_tasks(redis_server: str) -> Iterator[None]:
    """The reaper enqueues retried runs; no test leaves such a task for a later test's worker."""
    _purge_runs_queue()
    yield
    _purge_runs_queue()


def _claimed(run: Run, *, attempt_events: list[tuple[str, dict[str, Any]]], attempt: int = 1) -> Run:
    """`run` as a worker left it when it died: claimed (attempt `attempt`), some events, a stale heartbeat."""
    stale = timezone.now() - timedelta(hours=1)
    Run.objects.filter(pk=run.pk).update(attempt=attempt - 1)
    run_update_with_events(
        run,
        [("start", {"messageId": "m"}), run_status_event(RunStatus.RUNNING)],
        status=RunStatus.QUEUED,
        changes={"status": RunStatus.RUNNING, "started_at": stale, "heartbeat_at": stale},
        increments={"attempt": 1},
    )
    if attempt_events:
        event_append_many(run, attempt_events)
    run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.RUNNING, attempt)
    return run


def _slots(run: Run) -> int:
    return OrganizationUsage.objects.get(organization_id=run.organization_id).active_runs


def _start(alice: Any, text: str = "hi") -> Run:
    version = manifest_version(alice.organization)
    return run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text=text)


def test_a_run_lost_before_any_tool_call_is_queued_again_and_keeps_its_slot(alice: Any) -> None:
    run = _claimed(
        _start(alice),
        attempt_events=[
            ("start-step", {}),
            ("text-start", {"id": "txt-1"}),
            ("text-delta", {"id": "txt-1", "delta": "Hel"}),
        ],
    )
    before = run.last_seq
    assert run_reap_lost() == {"retried": 1, "failed": 0}
    run.refresh_from_db()
    assert (run.status, run.attempt, run.worker, run.heartbeat_at) == (RunStatus.QUEUED, 1, "", None)
    assert _slots(run) == 1
    added = run_events_after(run, before)
    assert [(event.type, event.payload.get("id")) for event in added] == [
        ("text-end", "txt-1"),
        ("finish-step", None),
        ("data-status", None),
    ]
    status = added[-1].payload
    assert status["transient"] is True
    assert status["data"]["status"] == "queued"
    assert status["data"]["retry"]["attempt"] == 2
    assert status["data"]["retry"]["maxAttempts"] == settings.LIGHTFAST_RUN_MAX_ATTEMPTS
    assert "before it called a tool" in status["data"]["retry"]["error"]["message"]
    # The next attempt runs it to the end (the demo model answers in-process), under new text ids.
    assert run_execute(run_id=run.pk) is True
    run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2)
    assert _slots(run) == 0
    events = run_events_after(run, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    after_retry = [event for event in events if event.seq > added[-1].seq]
    assert after_retry[0].type == "start"
    assert all(
        event.payload["id"].startswith("txt-2-") for event in after_retry if event.type == "text-start"
    )


def test_a_run_lost_after_a_tool_call_started_fails_and_is_not_run_again(alice: Any) -> None:
    run = _claimed(
        _start(alice),
        attempt_events=[
            ("start-step", {}),
            (
                "tool-input-available",
                {"toolCallId": "c1", "toolName": "getWeather", "input": {"city": "Oslo"}},
            ),
        ],
    )
    assert run_reap_lost() == {"retried": 0, "failed": 1}
    run.refresh_from_db()
    assert (run.status, run.error_type) == (RunStatus.FAILED, "worker_lost")
    assert "after a tool call started" in run.error_message
    assert _slots(run) == 0
    # The step the client saw open is closed before the error and the terminal status.
    assert [event.type for event in run_events_after(run, 0)][-3:] == ["finish-step", "error", "data-status"]
    assert run_execute(run_id=run.pk) is False


def test_a_run_lost_on_its_last_attempt_fails(alice: Any) -> None:
    attempts = settings.LIGHTFAST_RUN_MAX_ATTEMPTS
    run = _claimed(_start(alice), attempt_events=[], attempt=attempts)
    assert run_reap_lost() == {"retried": 0, "failed": 1}
    run.refresh_from_db()
    assert (run.status, run.error_type) == (RunStatus.FAILED, "worker_lost")
    assert f"on each of its {attempts} attempts" in run.error_message


def test_a_run_lost_while_being_cancelled_is_not_retried(alice: Any) -> None:
    run = _claimed(_start(alice), attempt_events=[])
    run_cancel(run=run)  # a running run: the request is recorded, its (dead) worker would act on it
    assert run_reap_lost() == {"retried": 0, "failed": 1}
    run.refresh_from_db()
    assert (run.status, run.error_type) == (RunStatus.FAILED, "worker_lost")
    assert "being cancelled" in run.error_message


def test_a_retried_run_cancelled_while_queued_ends_and_frees_its_slot(alice: Any) -> None:
    run = _claimed(_start(alice), attempt_events=[])
    assert run_reap_lost()["retried"] == 1
    run = run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    assert _slots(run) == 0
    assert run_execute(run_id=run.pk) is False


def test_writes_of_an_attempt_the_reaper_took_back_match_nothing(alice: Any) -> None:
    run = _claimed(_start(alice), attempt_events=[("start-step", {})])
    stale_view = Run.objects.get(pk=run.pk)  # what the lost worker holds: attempt 1
    assert run_reap_lost()["retried"] == 1
    turn = AssistantTurn(stale_view, message_id="m")
    turn.text_delta("late words")
    before = Run.objects.get(pk=run.pk).last_seq
    with pytest.raises(RunCancelled) as stopped:
        turn.flush()
    assert stopped.value.reason == "worker_lost"
    assert Run.objects.get(pk=run.pk).last_seq == before


def test_a_stalled_worker_stops_once_its_run_was_given_to_another_attempt(
    alice: Any, use_fake_provider: FakeOpenAI, settings: Any
) -> None:
    """The reaper judged the worker lost (its clock says the heartbeat is stale) while it was alive."""
    settings.LIGHTFAST_RUN_HEARTBEAT_S = 0.2
    run = _start(alice, text=f"#hang=1 {uuid.uuid4()}")
    first = threading.Thread(target=run_execute, kwargs={"run_id": run.pk})
    first.start()
    try:
        deadline = time.monotonic() + 10
        while not any(event.type == "text-delta" for event in run_events_after(run, 0)):
            assert time.monotonic() < deadline, "the first attempt never streamed"
            time.sleep(0.05)
        assert run_reap_lost(now=timezone.now() + timedelta(hours=1)) == {"retried": 1, "failed": 0}
        # The first attempt's supervisor sees the run is no longer its attempt and stops it.
        first.join(10)
        assert not first.is_alive()
    finally:
        run_cancel(run=run)
        first.join(5)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED  # queued again, then cancelled: nothing ran it meanwhile
    events = run_events_after(run, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert [event.type for event in events].count("data-status") == 3  # running, queued (retry), cancelled
