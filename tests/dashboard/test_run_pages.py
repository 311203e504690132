"""The runs and usage pages through Django's test client: filtering by status, agent and day (errors next to
the field), a run's timeline, its error in plain words and usage; daily charts' data; another organization's
runs are 404."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

import pytest
from django.utils import timezone
from django.utils.html import strip_tags

from execution.models import RunStatus
from tests.bundles import manifest_version, weather_manifest
from tests.dashboard.browser_steps import recorded_run, tool_turn_events

pytestmark = pytest.mark.django_db


def words(html: str) -> str:
    """The text of an HTML fragment with its whitespace collapsed."""
    return " ".join(strip_tags(html).split())


def run_links(html: str) -> list[str]:
    """The run ids the runs table links to, in order (the page shows their first 8 characters)."""
    return re.findall(r'href="/runs/([0-9a-f-]{36})/"', html)


@pytest.fixture
def runs(alice: Any) -> dict[str, Any]:
    """Alice's runs: two agents, three statuses, three days."""
    manifest = weather_manifest()
    manifest["agents"]["forecast"] = {**manifest["agents"]["weather"], "name": "forecast"}
    version = manifest_version(alice.organization, manifest=manifest)
    day = datetime(2026, 3, 10, 12, tzinfo=UTC)
    return {
        "ok": recorded_run(version, status=RunStatus.SUCCEEDED, events=tool_turn_events(), created_at=day),
        "failed": recorded_run(
            version,
            status=RunStatus.FAILED,
            events=[("start", {}), ("error", {"errorText": "provider_auth: refused"})],
            error=("provider_auth", "The model provider refused the request (HTTP 401)."),
            created_at=day + timedelta(days=1),
        ),
        "forecast": recorded_run(
            version, status=RunStatus.SUCCEEDED, events=[], created_at=day + timedelta(days=2)
        ),
    }


def test_runs_are_listed_newest_first_and_filtered(
    alice: Any, runs: dict[str, Any], member_client: Any
) -> None:
    runs["forecast"].agent_key = "forecast"
    runs["forecast"].save(update_fields=["agent_key"])
    client = member_client(alice.owner)
    everything = client.get("/runs/").content.decode()
    assert run_links(everything) == [str(runs[name].pk) for name in ("forecast", "failed", "ok")]
    assert (
        '<option value="weather/forecast">' in everything and '<option value="weather/weather">' in everything
    )

    assert run_links(client.get("/runs/?status=failed").content.decode()) == [str(runs["failed"].pk)]
    by_agent = client.get("/runs/?agent=weather/forecast").content.decode()
    assert run_links(by_agent) == [str(runs["forecast"].pk)]
    by_day = client.get("/runs/?since=2026-03-11&until=2026-03-11").content.decode()
    assert run_links(by_day) == [str(runs["failed"].pk)]
    assert "1 run<" in by_day


def test_an_impossible_filter_says_so_next_to_the_field(
    alice: Any, runs: dict[str, Any], member_client: Any
) -> None:
    client = member_client(alice.owner)
    backwards = client.get("/runs/?since=2026-03-12&until=2026-03-10").content.decode()
    assert "The last day comes before the first one." in backwards.split('id="id_until_error"')[1]
    assert run_links(backwards) == []
    unknown = client.get("/runs/?status=exploded").content.decode()
    assert "Select a valid choice." in unknown.split('id="id_status_error"')[1]


def test_another_organizations_runs_are_not_listed_or_found(
    bob: Any, runs: dict[str, Any], member_client: Any
) -> None:
    client = member_client(bob.owner)
    assert run_links(client.get("/runs/").content.decode()) == []
    assert client.get(f"/runs/{runs['ok'].pk}/").status_code == 404
    assert client.get(f"/runs/{uuid.uuid4()}/").status_code == 404
    assert client.get("/runs/not-a-uuid/").status_code == 404


def test_a_run_shows_its_timeline_and_usage(alice: Any, runs: dict[str, Any], member_client: Any) -> None:
    run = runs["ok"]
    run.input_tokens, run.output_tokens, run.sandbox_cpu_ms, run.tool_calls = 30, 12, 1500, 1
    run.save()
    html = member_client(alice.owner).get(f"/runs/{run.pk}/").content.decode()
    timeline = [
        words(unescape(item.split(">", 1)[1])) for item in html.split('<li class="timeline-entry')[1:]
    ]
    assert timeline[0].endswith("Run started")
    assert any("Tool call: getWeather" in entry and '"city": "Paris"' in entry for entry in timeline)
    assert any("Logs of getWeather [log] lookup Paris" in entry for entry in timeline)
    assert any("Tool output: getWeather after 2000 ms" in entry for entry in timeline)
    # The two deltas are one entry, the whole text, at the first one's time.
    assert [entry for entry in timeline if "Text" in entry] == ["+9.0 s Text It is 21 degrees in Paris."]
    assert timeline[-1].endswith("Status: succeeded")
    usage = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]+)</dd>", html.split('id="usage-heading"')[1]))
    assert usage["Tokens in"] == "30" and usage["Tokens out"] == "12" and usage["Tool calls"] == "1"
    assert usage["Sandbox CPU"] == "1.5 s"


def test_a_failed_run_says_what_went_wrong_in_plain_words(
    alice: Any, runs: dict[str, Any], member_client: Any
) -> None:
    html = member_client(alice.owner).get(f"/runs/{runs['failed'].pk}/").content.decode()
    banner = words(html.split('role="alert">')[1].split("</div>")[0])
    assert banner.startswith("The model provider refused the API key.")
    assert "The model provider refused the request (HTTP 401). (provider_auth)" in banner


def test_usage_shows_quotas_and_30_days_of_runs_and_cpu(alice: Any, bob: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization)
    recorded_run(version, status=RunStatus.SUCCEEDED, events=[], sandbox_cpu_ms=2500)
    recorded_run(version, status=RunStatus.FAILED, events=[], created_at=timezone.now() - timedelta(days=3))
    html = member_client(alice.owner).get("/usage/").content.decode()
    for label in ("Runs this month", "Sandbox CPU this month", "Model tokens this month", "Bundle storage"):
        assert label in html
    runs_chart = json.loads(html.split('id="runs-chart-data" type="application/json">')[1].split("<")[0])
    cpu_chart = json.loads(html.split('id="cpu-chart-data" type="application/json">')[1].split("<")[0])
    assert len(runs_chart["labels"]) == 30 and runs_chart["labels"][-1] == timezone.now().date().isoformat()
    assert runs_chart["series"][0]["values"][-1] == 1 and runs_chart["series"][0]["values"][-4] == 1
    assert cpu_chart["series"][0]["values"][-1] == 2.5
    assert 'data-chart="runs-chart-data"' in html and 'data-chart="cpu-chart-data"' in html
    other = member_client(bob.owner).get("/usage/").content.decode()
    assert sum(json.loads(other.split('id="runs-chart-data" type="application/json">')[1].split("<")[0])[
        "series"][0]["values"]) == 0  # fmt: skip
