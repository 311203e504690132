"""Operator controls: `manage.py org set-limits/suspend/reactivate/usage`, audited, and their effect."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from execution.models import RunStatus
from execution.services import run_start
from organizations.models import AuditLog
from tests.bundles import manifest_version


def _org(*args: str) -> str:
    out = StringIO()
    call_command("org", *args, stdout=out)
    return out.getvalue()


def test_set_limits_changes_every_limit_and_is_audited(alice):
    output = _org(
        "set-limits", "alice", "--api-rate", "100/m", "--runs-per-month", "5", "--concurrent-runs", "2",
        "--sandbox-cpu-ms-per-month", "1000", "--model-tokens-per-month", "2000",
        "--bundle-storage-bytes", "3000", "--max-bundle-bytes", "400", "--run-cpu-ms", "500",
        "--run-memory-bytes", "67108864", "--run-wall-ms", "9000",
        "--reason", "trial plan",
    )  # fmt: skip
    limits = json.loads(output)
    assert limits["api_rate"] == "100/m" and limits["runs_per_month"] == 5 and limits["run_wall_ms"] == 9000
    entry = AuditLog.objects.get(action="organization.limits_changed")
    assert entry.reason == "trial plan" and entry.metadata["after"]["concurrent_runs"] == 2


def test_set_limits_refuses_per_run_limits_above_the_platform_maximum(alice, settings):
    settings.LIGHTFAST_MAX_RUN_WALL_MS = 10_000
    with pytest.raises(CommandError, match="run_wall_ms"):
        _org("set-limits", "alice", "--run-wall-ms", "20000")
    with pytest.raises(CommandError, match="api_rate|rate"):
        _org("set-limits", "alice", "--api-rate", "lots")


def test_suspend_refuses_the_api_cancels_runs_and_reactivate_restores(alice, bob, api):
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    output = _org("suspend", "alice", "--reason", "abuse report 42")
    assert "cancelled 1 run(s)" in output
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    response = api.get("/api/v1/organization", key=alice.keys["read"])
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "organization_suspended"
    assert api.get("/api/v1/organization", key=bob.keys["read"]).status_code == 200
    suspended = AuditLog.objects.get(action="organization.suspended")
    assert suspended.reason == "abuse report 42" and suspended.actor_label == "operator:cli"
    assert AuditLog.objects.filter(action="run.cancelled", target_id=str(run.pk)).exists()

    _org("reactivate", "alice", "--reason", "resolved")
    assert api.get("/api/v1/organization", key=alice.keys["read"]).status_code == 200
    assert AuditLog.objects.filter(action="organization.reactivated").exists()


def test_suspend_needs_a_reason(alice):
    with pytest.raises(CommandError, match="reason"):
        _org("suspend", "alice", "--reason", " ")


def test_usage_prints_json(alice):
    report = json.loads(_org("usage", "alice"))
    assert report["organization"] == "alice"
    assert report["quotas"]["concurrent_runs"]["limit"] == alice.organization.concurrent_runs
    assert len(report["daily"]) == 30


def test_admin_actions_need_a_reason_and_are_audited(admin_client, alice, api):
    from django.urls import reverse

    url = reverse("admin:organizations_organization_changelist")
    selected = {"_selected_action": [alice.organization.pk], "index": 0}
    admin_client.post(url, {**selected, "action": "suspend", "reason": ""})
    alice.organization.refresh_from_db()
    assert alice.organization.is_active  # no reason, no action
    admin_client.post(url, {**selected, "action": "suspend", "reason": "chargeback"})
    alice.organization.refresh_from_db()
    assert not alice.organization.is_active
    entry = AuditLog.objects.get(action="organization.suspended")
    assert entry.reason == "chargeback" and entry.actor_type == "operator"
    assert api.get("/api/v1/organization", key=alice.keys["read"]).status_code == 403
    admin_client.post(url, {**selected, "action": "reset_quota_period", "reason": "goodwill"})
    assert AuditLog.objects.get(action="organization.quota_period_reset").reason == "goodwill"
    page = admin_client.get(reverse("admin:organizations_organization_change", args=[alice.organization.pk]))
    # The usage panel is a table: quota, used, limit, reset time.
    assert b"<tr><td>runs_per_month</td><td>0</td><td>" in page.content
