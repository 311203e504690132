"""GET /api/v1/usage and GET /api/v1/audit: the caller's organization only, computed from its runs and log."""

from __future__ import annotations

from execution.services import run_execute, run_start
from organizations.services import Actor, apikey_create
from tests.bundles import manifest_version


def test_usage_reports_every_quota_and_a_daily_series_from_runs(alice, bob, api):
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    run_execute(run_id=run.pk, worker="test")
    run.refresh_from_db()

    body = api.get("/api/v1/usage", key=alice.keys["read"]).json()
    quotas = body["quotas"]
    assert set(quotas) == {
        "runs_per_month",
        "concurrent_runs",
        "sandbox_cpu_ms_per_month",
        "model_tokens_per_month",
        "bundle_storage_bytes",
    }
    assert quotas["runs_per_month"]["used"] == 1
    assert quotas["runs_per_month"]["limit"] == alice.organization.runs_per_month
    assert quotas["runs_per_month"]["resets_at"] == body["period"]["resets_at"]
    assert quotas["concurrent_runs"]["used"] == 0 and quotas["concurrent_runs"]["resets_at"] is None
    tokens = run.input_tokens + run.output_tokens
    assert quotas["model_tokens_per_month"]["used"] == tokens
    assert len(body["daily"]) == 30
    assert body["daily"][-1]["runs"] == 1 and body["daily"][-1]["model_tokens"] == tokens
    assert sum(day["runs"] for day in body["daily"]) == 1

    # Bob sees only his own organization's usage.
    bob_body = api.get("/api/v1/usage", key=bob.keys["read"]).json()
    assert bob_body["organization"] == "bob"
    assert bob_body["quotas"]["runs_per_month"]["used"] == 0


def test_audit_log_lists_only_the_callers_organization(alice, bob, api):
    apikey_create(
        organization=alice.organization, name="ci", scopes=["read"], actor=Actor.for_user(alice.owner)
    )
    apikey_create(
        organization=bob.organization, name="bob-ci", scopes=["read"], actor=Actor.for_user(bob.owner)
    )
    body = api.get("/api/v1/audit?action=apikey.created", key=alice.keys["read"]).json()
    names = [entry["metadata"]["name"] for entry in body["results"]]
    assert names[0] == "ci" and not any(name.startswith("bob") for name in names)
    entry = body["results"][0]
    assert entry["actor"] == {"type": "user", "label": alice.owner.get_username()}
    assert entry["target"]["type"] == "apikey"

    page = api.get("/api/v1/audit?limit=1", key=alice.keys["read"]).json()
    assert len(page["results"]) == 1 and page["next_before"] == page["results"][0]["id"]
    rest = api.get(f"/api/v1/audit?before={page['next_before']}", key=alice.keys["read"]).json()
    assert all(item["id"] < page["next_before"] for item in rest["results"])
    refused = api.get("/api/v1/audit?limit=x", key=alice.keys["read"]).json()
    assert refused["error"]["type"] == "invalid_request"
    assert api.get("/api/v1/audit", user=alice.users["viewer"]).status_code == 200
