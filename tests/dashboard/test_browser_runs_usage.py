"""Runs and usage in a real browser: filtering the runs list (by keyboard), a run's timeline, error and usage;
the usage page's quotas and its two uPlot charts; both at a phone's width."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from agents.models import BundleVersion
from execution.models import RunStatus
from tests.bundles import manifest_version
from tests.dashboard.browser_steps import member_of_new_organization, recorded_run, sign_in, tool_turn_events
from tests.dashboard.live import LiveStack, no_sideways_scroll, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def some_runs(version: BundleVersion) -> None:
    """A succeeded tool turn today, a failed run yesterday, a cancelled one five days ago."""
    now = timezone.now()
    recorded_run(version, status=RunStatus.SUCCEEDED, events=tool_turn_events(), sandbox_cpu_ms=1800)
    recorded_run(
        version,
        status=RunStatus.FAILED,
        events=[("start", {}), ("error", {"errorText": "memory_limit: the tool used more than 128 MB"})],
        error=("memory_limit", "The tool getWeather used more than 128 MB of memory."),
        created_at=now - timedelta(days=1),
        sandbox_cpu_ms=900,
    )
    recorded_run(
        version,
        status=RunStatus.CANCELLED,
        events=[("start", {}), ("abort", {})],
        error=("cancelled", "The run was cancelled."),
        created_at=now - timedelta(days=5),
    )


def test_the_runs_list_filters_and_a_run_explains_itself(live: LiveStack, page: Any) -> None:
    organization, user = member_of_new_organization("ada")
    some_runs(manifest_version(organization))
    sign_in(page, live, user)
    page.goto("/runs/")
    table = page.locator("table tbody tr")
    expect(table).to_have_count(3)
    shot(page, "runs-all")

    # Keyboard only: choose the status, tab to the button, press it.
    page.get_by_label("Status").select_option("failed")
    page.get_by_label("Status").focus()
    button = page.get_by_role("button", name="Filter")
    for _ in range(12):  # Agent, From and To (a date input's parts are stops of their own), Filter
        page.keyboard.press("Tab")
        if button.evaluate("element => element === document.activeElement"):
            break
    expect(button).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(live.url("/runs/?status=failed&agent=&since=&until="))
    expect(table).to_have_count(1)
    expect(table).to_contain_text("Failed")

    page.get_by_label("Status").select_option("")
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()
    page.get_by_label("From").fill((timezone.now() - timedelta(days=6)).date().isoformat())
    page.get_by_label("To").fill(yesterday)
    page.get_by_role("button", name="Filter").click()
    expect(table).to_have_count(2)
    page.get_by_label("Agent").select_option("weather/weather")
    page.get_by_role("button", name="Filter").click()
    expect(table).to_have_count(2)
    shot(page, "runs-filtered")

    table.filter(has_text="Failed").get_by_role("link").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("A tool used more memory than a run may.")
    expect(alert).to_contain_text("The tool getWeather used more than 128 MB of memory.")
    expect(page.locator(".timeline")).to_contain_text("memory_limit: the tool used more than 128 MB")
    shot(page, "run-failed")

    page.go_back()
    page.get_by_role("link", name="Clear").click()
    table.filter(has_text="Succeeded").get_by_role("link").click()
    timeline = page.locator(".timeline")
    expect(timeline).to_contain_text("Tool call: getWeather")
    expect(timeline).to_contain_text("Logs of getWeather")
    expect(timeline).to_contain_text("It is 21 degrees in Paris.")
    expect(page.get_by_role("region", name="Usage")).to_contain_text("1.8 s")
    shot(page, "run-succeeded")


def test_usage_shows_quotas_and_two_charts(live: LiveStack, page: Any, phone_page: Any) -> None:
    organization, user = member_of_new_organization("grace")
    some_runs(manifest_version(organization))
    for current, name in ((page, "desktop"), (phone_page, "phone")):
        sign_in(current, live, user)
        current.goto("/usage/")
        expect(current.get_by_text("Runs this month")).to_be_visible()
        expect(current.locator(".quota meter")).to_have_count(5)
        for chart in ("runs-chart-data", "cpu-chart-data"):
            drawn = current.locator(f'[data-chart="{chart}"] .uplot canvas')
            expect(drawn).to_have_count(1)
            box = drawn.bounding_box()
            assert box is not None and box["width"] > 150 and box["height"] > 100
        expect(current.locator('[data-chart="runs-chart-data"] .u-legend')).to_contain_text("Runs")
        expect(current.locator('[data-chart="cpu-chart-data"] .u-legend')).to_contain_text("Sandbox CPU (s)")
        assert no_sideways_scroll(current)
        shot(current, f"usage-{name}")
    phone_page.goto("/runs/")
    expect(phone_page.locator("table tbody tr")).to_have_count(3)
    assert no_sideways_scroll(phone_page)
    shot(phone_page, "runs-phone")
