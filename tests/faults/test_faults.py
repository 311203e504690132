"""Fault experiments on the launcher's stack: kill the Celery worker mid-run, kill the sandbox runners
mid-call, pause redis, take the database away, lose a broker message, fill the sandbox pool.

Each time: no run stuck, every event of every run reaches a live websocket client once (none lost, none
duplicated), every affected run ends with a truthful status and cause, and the service resumes on its own
(no test restarts anything). `benchmarks/faults.py` runs these and prints the figures as JSON lines.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution.models import Run, RunStatus
from lightfast_cloud.celery import app
from organizations.models import Organization
from tests.bundles import WEATHER
from tests.faults.stack import Outcome, RunStreams, Stack, check_runs, record, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

WEATHER_AGENT = "weather/weather"
SLEEPER_AGENT = (
    "sleeper/sleeper"  # its model is the offline demo model: `sleep {"ms": 60000}` calls that tool
)
SLEEPER = Path(__file__).with_name("sleeper.mjs")
HOLD = 'sleep {"ms": 60000}'  # holds the sandbox runner until the run's wall limit (or a kill)
QUICK = 'double {"n": 2}'


@pytest.fixture
def tenant(alice: Any) -> Any:
    """Alice's organization far from its rate and run quotas, with the weather and the sleeper bundles."""
    Organization.objects.filter(pk=alice.organization.pk).update(
        api_rate="100000/m", concurrent_runs=1000, runs_per_month=10**9, run_wall_ms=60_000
    )
    _ready_bundle(alice.organization, WEATHER, "weather")
    _ready_bundle(alice.organization, SLEEPER, "sleeper")
    return alice


def _ready_bundle(organization: Organization, path: Path, slug: str) -> None:
    """Upload a bundle and wait until it is ready (the stack's worker may introspect it first)."""
    from agents.models import BundleVersion, VersionStatus
    from agents.services import bundle_upload
    from organizations.services import Actor

    result = bundle_upload(
        organization=organization, slug=slug, data=path.read_bytes(), actor=Actor.system("tests")
    )

    def ready() -> bool:
        return BundleVersion.objects.get(pk=result.version.pk).status == VersionStatus.READY

    wait_until(ready, 60, f"bundle {slug} ready")


def _text(marker: str) -> str:
    """A user message for the fake model; unique, so its `#hang=1` counts this conversation only."""
    return f"{marker} {uuid.uuid4()}"


def _has_event(run_id: str, event_type: str) -> bool:
    return Run.objects.filter(pk=run_id, events__type=event_type).exists()


def _tool_outcome(run: Run) -> Any:
    """A run's tool call: its output, or the error type it ended with (None when none ended)."""
    for event in run.events.filter(type__in=["tool-output-available", "tool-output-error"]):
        if event.type == "tool-output-available":
            return event.payload["output"]
        return str(event.payload["errorText"]).split(":")[0]
    return None


def _experiment(stack: Stack, tenant: Any, name: str) -> tuple[Outcome, RunStreams, float]:
    stack.wait_healthy()
    return Outcome(experiment=name), RunStreams(web=stack, key=tenant.keys["all"]), time.monotonic()


def _finish(outcome: Outcome, streams: RunStreams, started: float, timeout: float = 60) -> dict[str, Run]:
    try:
        streams.wait(timeout)
    finally:
        streams.close()
    runs = check_runs(streams, outcome)
    outcome.seconds = round(time.monotonic() - started, 1)
    record(outcome)
    return runs


def test_a_killed_worker_is_restarted_and_its_runs_retried_or_failed_truthfully(
    stack: Stack, tenant: Any
) -> None:
    outcome, streams, started = _experiment(stack, tenant, "kill the Celery worker mid-run")
    key = tenant.keys["all"]
    # The model hangs on its first request: these runs are mid-stream, no tool call started.
    streaming = [stack.start_run(key, WEATHER_AGENT, _text("#hang=1")) for _ in range(5)]
    # These are inside a tool call (it sleeps a minute) when the worker dies.
    in_tool = [stack.start_run(key, SLEEPER_AGENT, HOLD) for _ in range(2)]
    streams.follow(WEATHER_AGENT, streaming)
    streams.follow(SLEEPER_AGENT, in_tool)
    wait_until(lambda: all(_has_event(run, "text-delta") for run in streaming), 30, "runs streaming")
    wait_until(lambda: all(_has_event(run, "tool-input-available") for run in in_tool), 30, "tool calls")
    worker = stack.worker_pid()
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    runs = _finish(outcome, streams, started)
    for run_id in streaming:
        run = runs[run_id]
        assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 2), (run.status, run.error_message)
        assert Run.objects.get(pk=run_id).messages.get(role="assistant").text().startswith("Echo: #hang=1")
    for run_id in in_tool:
        run = runs[run_id]
        assert (run.status, run.error_type) == (RunStatus.FAILED, "worker_lost")
        assert "after a tool call started" in run.error_message
    # The launcher started the worker again (and said so); nothing else did.
    restarted = stack.worker_pid()
    assert restarted is not None and restarted != worker
    assert stack.launcher.poll() is None
    log = stack.log.read_text(errors="replace")
    assert "worker-1 exited with status -9; starting it again" in log
    assert "worker-1 started again" in log


def test_killed_sandbox_runners_fail_only_their_calls_and_the_pool_heals(stack: Stack, tenant: Any) -> None:
    outcome, streams, started = _experiment(stack, tenant, "kill the sandbox runners mid-call")
    key = tenant.keys["all"]
    call = stack.start_run(key, SLEEPER_AGENT, HOLD)
    streams.follow(SLEEPER_AGENT, [call])
    wait_until(lambda: _has_event(call, "tool-input-available"), 30, "the tool call")
    time.sleep(0.3)  # in the runner by now
    runners = stack.runner_pids()
    assert runners, "the worker has no sandbox runner"
    for pid in runners:
        os.killpg(pid, signal.SIGKILL)  # the runner and every zygote under it
    streams.wait(60)
    # The call failed and said why; the model saw that error and answered: the run itself succeeded.
    run = Run.objects.get(pk=call)
    assert run.status == RunStatus.SUCCEEDED, (run.status, run.error_message)
    assert _tool_outcome(run) == "sandbox_crash"
    # The pool replaced its runner: a call works again, on the same worker process.
    worker = stack.worker_pid()
    again = stack.start_run(key, SLEEPER_AGENT, QUICK)
    streams.follow(SLEEPER_AGENT, [again])
    _finish(outcome, streams, started)
    run = Run.objects.get(pk=again)
    assert (run.status, _tool_outcome(run)) == (RunStatus.SUCCEEDED, 4)
    assert set(stack.runner_pids()).isdisjoint(runners)
    assert stack.worker_pid() == worker


def test_runs_go_on_while_redis_is_paused_and_health_comes_back_by_itself(stack: Stack, tenant: Any) -> None:
    outcome, streams, started = _experiment(stack, tenant, "pause redis for 5 s")
    key = tenant.keys["all"]
    worker = stack.worker_pid()
    runs_started = [stack.start_run(key, WEATHER_AGENT, _text("#slow=1")) for _ in range(4)]
    streams.follow(WEATHER_AGENT, runs_started)
    wait_until(
        lambda: all(Run.objects.get(pk=run).status == RunStatus.RUNNING for run in runs_started),
        30,
        "runs claimed",
    )
    stack.redis.pause()
    paused_at = time.time()
    try:
        time.sleep(2.5)
        status, body = stack.health()
        assert status == 503 and body["checks"]["redis"]["ok"] is False, body
        time.sleep(2.5)
    finally:
        stack.redis.restore()
    resumed_at = time.time()
    runs = _finish(outcome, streams, started)
    assert all(run.status == RunStatus.SUCCEEDED for run in runs.values()), {r.status for r in runs.values()}

    # Healthy again without any restart: the worker's status thread outlived the outage and published.
    def published_since_the_outage() -> bool:
        status, body = stack.health()
        return status == 200 and body["checks"]["sandbox"]["status"]["published_at"] > resumed_at

    wait_until(published_since_the_outage, 30, "a sandbox status published after redis came back")
    # Its thread said so, once when the outage began and once when it ended.
    log = stack.log.read_text(errors="replace")
    assert (
        log.count("sandbox status publishing (redis) failing")
        == log.count("sandbox status publishing (redis) recovered")
        >= 1
    )
    assert stack.worker_pid() == worker
    assert resumed_at - paused_at >= 5


def test_runs_ride_out_the_database_going_away_for_a_few_seconds(stack: Stack, tenant: Any) -> None:
    outcome, streams, started = _experiment(stack, tenant, "database away for 2.5 s")
    key = tenant.keys["all"]
    worker = stack.worker_pid()
    # The model answers after 1 s: the runs are claimed and waiting when the database goes away.
    runs_started = [stack.start_run(key, WEATHER_AGENT, _text("#slow=1")) for _ in range(4)]
    streams.follow(WEATHER_AGENT, runs_started)
    wait_until(
        lambda: all(Run.objects.get(pk=run).status == RunStatus.RUNNING for run in runs_started),
        30,
        "runs claimed",
    )
    if stack.database is not None:  # PostgreSQL: connections reset, new ones refused
        stack.database.refuse()
        try:
            time.sleep(2.5)
        finally:
            stack.database.restore()
    else:  # SQLite: another process holds the database's write lock
        assert stack.sqlite_path is not None
        holder = sqlite3.connect(stack.sqlite_path, timeout=10, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            time.sleep(2.5)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
    runs = _finish(outcome, streams, started)
    assert all(run.status == RunStatus.SUCCEEDED for run in runs.values()), [
        (run.status, run.error_type, run.error_message) for run in runs.values()
    ]
    assert all(run.attempt == 1 for run in runs.values())  # nobody took a live worker's runs away
    stack.wait_healthy()
    assert stack.worker_pid() == worker
    # Once the database is back no request fails on a connection that died while it was away: enough
    # requests, each on a new HTTP connection, to draw every pooled connection of both web processes.
    statuses = [
        httpx.get(
            f"{stack.http}/api/v1/runs", headers={"Authorization": f"Bearer {key}"}, timeout=30
        ).status_code
        for _ in range(24)
    ]
    assert statuses == [200] * len(statuses), statuses


def test_a_lost_broker_message_is_sent_again_and_its_run_runs(stack: Stack, tenant: Any) -> None:
    outcome, streams, started = _experiment(stack, tenant, "lose broker messages")
    key = tenant.keys["all"]
    worker = stack.worker_pid()
    assert worker is not None
    # While the worker is down (the launcher brings it back in seconds) the broker loses the tasks.
    os.kill(worker, signal.SIGKILL)
    runs_started = [stack.start_run(key, WEATHER_AGENT, _text("hello")) for _ in range(4)]
    with app.connection_for_write() as connection:
        lost = int(connection.default_channel.queue_purge("runs") or 0)
    assert lost == len(runs_started)
    streams.follow(WEATHER_AGENT, runs_started)
    runs = _finish(outcome, streams, started)
    for run in runs.values():
        assert (run.status, run.attempt) == (RunStatus.SUCCEEDED, 1), (run.status, run.error_message)
        assert run.requeue_count >= 1


def test_a_full_sandbox_pool_makes_calls_wait_or_time_out_truthfully(stack: Stack, tenant: Any) -> None:
    outcome, streams, started = _experiment(stack, tenant, "fill the sandbox pool")
    organization = Organization.objects.filter(pk=tenant.organization.pk)
    key = tenant.keys["all"]
    # The bundle's zygote (one per bundle version and runner; the pool has one runner) is held 4 s by
    # this call; the runs started after it may take 1.5 s each (a run keeps the limit it started with).
    organization.update(run_wall_ms=4000)
    holder = stack.start_run(key, SLEEPER_AGENT, HOLD)
    streams.follow(SLEEPER_AGENT, [holder])
    wait_until(lambda: _has_event(holder, "tool-input-available"), 30, "the holder's call")
    time.sleep(0.3)  # in the zygote by now
    organization.update(run_wall_ms=1500)
    waiting = [stack.start_run(key, SLEEPER_AGENT, QUICK) for _ in range(3)]
    streams.follow(SLEEPER_AGENT, waiting)
    streams.wait(60)
    runs = {run_id: Run.objects.get(pk=run_id) for run_id in [holder, *waiting]}
    for run_id in waiting:
        run = runs[run_id]
        # No zygote became free within the run's wall limit: the run timed out, or its call did and
        # the model quoted that error just before the deadline.
        assert (run.status, run.error_type) in (
            (RunStatus.TIMED_OUT, "timeout"),
            (RunStatus.SUCCEEDED, ""),
        ), (
            run.status,
            run.error_message,
        )
        assert _tool_outcome(run) in ("timeout", None), _tool_outcome(run)
    held = runs[holder]
    assert (held.status, held.error_type) in ((RunStatus.TIMED_OUT, "timeout"), (RunStatus.SUCCEEDED, ""))
    assert _tool_outcome(held) in ("timeout", None)
    # The pool serves again once the holder is gone.
    organization.update(run_wall_ms=60_000)
    again = stack.start_run(key, SLEEPER_AGENT, QUICK)
    streams.follow(SLEEPER_AGENT, [again])
    _finish(outcome, streams, started)
    run = Run.objects.get(pk=again)
    assert (run.status, _tool_outcome(run)) == (RunStatus.SUCCEEDED, 4)
