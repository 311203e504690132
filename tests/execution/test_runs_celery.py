"""Runs end to end through a real Celery worker, the real sandbox and the weather bundle."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from execution.models import Run, RunStatus
from execution.selectors import run_events_after
from execution.services import run_cancel, run_execute, run_reap_lost, run_start
from tests.bundles import manifest_version, uploaded_version
from tests.execution.fake_openai import FakeOpenAI
from tests.services import start_celery_worker

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def wait_terminal(run: Run, timeout: float = 30.0) -> Run:
    def done() -> bool:
        run.refresh_from_db()
        return run.is_terminal

    wait_for(done, timeout)
    return run


def test_weather_run_with_the_demo_model_through_celery_and_the_sandbox(
    alice: Any, media_root: Any, celery_worker: Any
) -> None:
    version = uploaded_version(alice.organization)
    run = run_start(
        organization=alice.organization,
        bundle_version=version,
        agent_key="weather",
        text='What is the weather? getWeather {"city": "Paris"}',
    )
    run = wait_terminal(run)
    assert run.status == RunStatus.SUCCEEDED, (run.error_type, run.error_message)
    events = run_events_after(run, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    kinds = [event.type for event in events]
    assert kinds[0] == "start"
    assert "text-delta" in kinds
    tool_input = next(event for event in events if event.type == "tool-input-available")
    assert tool_input.payload["toolName"] == "getWeather"
    assert tool_input.payload["input"] == {"city": "Paris"}
    output = next(event for event in events if event.type == "tool-output-available")
    assert output.payload["toolCallId"] == tool_input.payload["toolCallId"]
    assert output.payload["output"]["city"] == "Paris"
    assert output.payload["output"]["unit"] == "celsius"  # zod's default, applied in the sandbox
    assert output.payload["output"]["requestedBy"] == alice.organization.public_id
    assert kinds.index("tool-input-available") < kinds.index("tool-output-available") < kinds.index("finish")
    assert kinds[-2:] == ["finish", "data-status"]
    assert run.tool_calls == 1 and run.steps == 2 and run.model == "demo"
    assert run.worker.startswith("test-")
    # The demo model's answer quotes the sandbox's output.
    text = "".join(event.payload["delta"] for event in events if event.type == "text-delta")
    assert '"city":"Paris"' in text


def test_invalid_tool_input_is_reported_by_zod_and_the_run_goes_on(
    alice: Any, media_root: Any, celery_worker: Any
) -> None:
    version = uploaded_version(alice.organization)
    run = run_start(
        organization=alice.organization,
        bundle_version=version,
        agent_key="weather",
        text='getWeather {"city": ""}',
    )
    run = wait_terminal(run)
    assert run.status == RunStatus.SUCCEEDED
    error = next(event for event in run_events_after(run, 0) if event.type == "tool-output-error")
    assert error.payload["errorText"].startswith("invalid_input")


def test_tool_run_calls_one_tool(alice: Any, media_root: Any, celery_worker: Any) -> None:
    version = uploaded_version(alice.organization)
    run = run_start(
        organization=alice.organization,
        bundle_version=version,
        agent_key="weather",
        tool="convertTemperature",
        tool_input={"value": 100, "from": "celsius"},
    )
    run = wait_terminal(run)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.output == {"value": 212, "unit": "fahrenheit"}
    assert [e.type for e in run_events_after(run, 0)][-2:] == ["finish", "data-status"]


def test_provider_run_and_cancel_through_celery(
    alice: Any, media_root: Any, use_fake_provider: FakeOpenAI, celery_worker: Any
) -> None:
    version = manifest_version(alice.organization)
    ok = wait_terminal(
        run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hello")
    )
    assert ok.status == RunStatus.SUCCEEDED
    assert (
        "".join(e.payload["delta"] for e in run_events_after(ok, 0) if e.type == "text-delta")
        == "Echo: hello"
    )
    failed = wait_terminal(
        run_start(
            organization=alice.organization, bundle_version=version, agent_key="weather", text="#status=401"
        )
    )
    assert (failed.status, failed.error_type) == (RunStatus.FAILED, "provider_auth")

    hanging = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="#hang"
    )
    wait_for(lambda: any(e.type == "text-delta" for e in run_events_after(hanging, 0)))
    cancelled_at = time.monotonic()
    run_cancel(run=hanging)
    wait_terminal(hanging, timeout=5)
    assert hanging.status == RunStatus.CANCELLED
    assert time.monotonic() - cancelled_at < 1.0


def test_a_killed_workers_run_is_retried_by_another_without_duplicating_events(
    alice: Any, media_root: Any, use_fake_provider: FakeOpenAI, settings: Any
) -> None:
    version = manifest_version(alice.organization)
    worker = start_celery_worker()
    try:
        # The provider hangs on the first request of this conversation only.
        run = run_start(
            organization=alice.organization,
            bundle_version=version,
            agent_key="weather",
            text=f"#hang=1 {uuid.uuid4()}",
        )
        wait_for(lambda: any(e.type == "text-delta" for e in run_events_after(run, 0)))
        worker.kill()
    finally:
        worker.stop()
    run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.RUNNING, 1)
    seen = [(event.seq, event.type) for event in run_events_after(run, 0)]
    # A new worker gets the redelivered task: the claim fails, it adds nothing.
    assert run_execute(run_id=run.pk) is False
    # Nothing heartbeats the run any more; once stale, the reaper queues it again (no tool call started).
    assert run_reap_lost() == {"retried": 0, "failed": 0}
    stale = timezone.now() + timedelta(seconds=settings.LIGHTFAST_RUN_STALE_S + 1)
    assert run_reap_lost(now=stale) == {"retried": 1, "failed": 0}
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED
    retry = run_events_after(run, len(seen))
    # The lost attempt's open text and step are closed as the client saw them, then the retry is announced.
    assert [event.type for event in retry] == ["text-end", "finish-step", "data-status"]
    assert retry[0].payload == {"id": "txt-1"}
    assert retry[-1].payload["data"]["status"] == "queued"
    assert retry[-1].payload["data"]["retry"]["attempt"] == 2
    assert retry[-1].payload["data"]["retry"]["error"]["type"] == "worker_lost"

    worker = start_celery_worker()  # the reaper sent the task again: this worker runs attempt 2
    try:
        wait_terminal(run)
    finally:
        worker.stop()
    assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2), run.error_message
    events = run_events_after(run, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert [(event.seq, event.type) for event in events][: len(seen)] == seen
    second = events[len(seen) + len(retry) :]
    assert [event.type for event in second][:2] == ["start", "data-status"]
    assert {event.payload["id"] for event in second if event.type == "text-start"} == {"txt-2-1"}
    # The stored answer is the attempt that finished.
    answer = run.messages.get(role="assistant")
    assert answer.text().startswith("Echo: #hang=1")
    # Reaping again changes nothing.
    assert run_reap_lost(now=timezone.now() + timedelta(hours=1)) == {"retried": 0, "failed": 0}
    assert len(run_events_after(run, 0)) == len(events)
