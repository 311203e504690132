"""`/`: the organization's bundles, recent runs and each quota's use, and nothing of another organization."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from execution.models import Run, RunStatus
from organizations.models import MonthlyUsage
from organizations.quotas import period_start
from tests.bundles import manifest_version

pytestmark = pytest.mark.django_db


def test_the_overview_shows_bundles_runs_and_quota_bars(alice: Any, bob: Any) -> None:
    version = manifest_version(alice.organization)
    manifest_version(bob.organization, slug="bobs-secret-bundle")
    Run.objects.create(
        organization=alice.organization,
        bundle_version=version,
        agent_key="weather",
        status=RunStatus.SUCCEEDED,
    )
    MonthlyUsage.objects.create(organization=alice.organization, period_start=period_start(), runs=2500)
    client = Client()
    client.force_login(alice.owner)
    page = client.get("/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'href="/bundles/weather/"' in html and "bobs-secret-bundle" not in html
    assert "weather/weather" in html and "Succeeded" in html
    assert [row.quota for row in page.context["quotas"]] == [
        "runs_per_month",
        "sandbox_cpu_ms_per_month",
        "model_tokens_per_month",
        "concurrent_runs",
        "bundle_storage_bytes",
    ]
    # runs: 2,500 of 10,000 used: a meter at 25 %, labelled by the quota's name.
    assert "2,500 / 10,000" in html
    meter = re.search(r'<meter aria-labelledby="quota-runs_per_month"[^>]*value="(\d+)"', html)
    assert meter is not None and meter[1] == "25"
