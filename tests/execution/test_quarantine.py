"""Quarantining a bundle version stops the runs on it and refuses new ones, on every path."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents.services import bundle_version_quarantine
from execution.models import Run, RunStatus
from execution.services import RunNotStartable, run_start
from organizations.models import AuditLog, OrganizationUsage
from organizations.services import Actor
from tests.bundles import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    closed_with,
    ws_connect,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _wait_status(run: Run, statuses: set[str], timeout: float = 15.0) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run stayed {run.status}")


def test_a_running_chat_on_a_quarantined_version_ends_cancelled(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any
) -> None:
    version = uploaded_version(alice.organization)
    run = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="hello #hang"
    )
    _wait_status(run, {RunStatus.RUNNING})
    operator = Actor.operator(label="operator:tests")
    bundle_version_quarantine(version=version, actor=operator, reason="malware report")
    run = _wait_status(run, {RunStatus.CANCELLED, RunStatus.FAILED, RunStatus.SUCCEEDED})
    assert run.status == RunStatus.CANCELLED and run.error_type == "cancelled"
    assert list(run.events.order_by("seq").values_list("type", flat=True))[-2:] == ["abort", "data-status"]
    entry = AuditLog.objects.get(action="run.cancelled", target_id=str(run.pk))
    assert entry.actor_label == "operator:tests" and "quarantined: malware report" in entry.reason
    assert OrganizationUsage.objects.get(organization=alice.organization).active_runs == 0


def test_a_queued_run_on_a_quarantined_version_is_cancelled_at_once(alice: Any, bob: Any) -> None:
    version = manifest_version(alice.organization)
    other = manifest_version(alice.organization, slug="other")
    bobs = manifest_version(bob.organization)
    queued = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="a")
    untouched = [
        run_start(organization=alice.organization, bundle_version=other, agent_key="weather", text="b"),
        run_start(organization=bob.organization, bundle_version=bobs, agent_key="weather", text="c"),
    ]
    bundle_version_quarantine(version=version, actor=Actor.system("tests"), reason="")
    queued.refresh_from_db()
    assert queued.status == RunStatus.CANCELLED
    for run in untouched:
        run.refresh_from_db()
        assert run.status == RunStatus.QUEUED
    assert OrganizationUsage.objects.get(organization=alice.organization).active_runs == 1


def test_a_new_run_on_a_quarantined_version_is_refused_with_a_clear_error(
    alice: Any, api: Any, asgi_server: Any
) -> None:
    version = manifest_version(alice.organization)
    bundle_version_quarantine(version=version, actor=Actor.system("tests"), reason="bad")
    version.refresh_from_db()

    with pytest.raises(RunNotStartable) as refused:
        run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    assert refused.value.code == "invalid_bundle" and "quarantined" in refused.value.message

    rest = api.post("/api/v1/runs", {"agent": "weather/weather", "input": "hi"}, key=alice.keys["all"])
    assert rest.status_code == 400, rest.content
    error = rest.json()["error"]
    assert error["type"] == "invalid_bundle" and "quarantined" in error["message"]
    assert error["detail"] == {"status": "quarantined"}

    with ws_connect(asgi_server, "/ws/v1/chat/weather/weather/", key=alice.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4404
    assert frames[0]["error"]["type"] == "invalid_bundle" and "quarantined" in frames[0]["error"]["message"]
    assert not Run.objects.filter(organization=alice.organization).exists()
