"""Bundles in a real browser: signing up and uploading weather.mjs with the progress bar reaching 100 % and
the status live until `ready`; a bundle with a syntax error shows its line and column; drag and drop; the
bundle's page and the tool playground; a phone's width."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from agents.models import VersionStatus
from tests.bundles import WEATHER
from tests.dashboard.browser_steps import member_of_new_organization, ready_weather_bundle, sign_in
from tests.dashboard.live import LiveStack, no_sideways_scroll, shot
from tests.services import SHARED_BUNDLES

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SYNTAX_ERROR = SHARED_BUNDLES / "hostile" / "syntax-error.mjs"
NO_AGENTS = SHARED_BUNDLES / "hostile" / "no-agents.mjs"


def test_sign_up_and_upload_weather_until_it_is_ready(live: LiveStack, page: Any) -> None:
    page.goto("/accounts/signup/")
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Analytical Engines")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(live.url("/"))
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Bundles").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bundles")
    shot(page, "bundles-empty")

    page.get_by_label("Bundle file").set_input_files(str(WEATHER))
    expect(page.get_by_label("Slug")).to_have_value("weather")  # offered from the file's name
    shot(page, "upload-chosen")
    page.get_by_role("button", name="Upload").click()
    progress = page.get_by_label("Upload progress")
    expect(progress).to_have_attribute("value", "100")
    expect(page.locator("#upload-percent")).to_have_text("Uploaded 100 %")
    status = page.locator(".upload-outcome [data-version-status]")
    expect(status).to_have_attribute("data-version-status", VersionStatus.READY, timeout=30_000)
    expect(status).to_contain_text("Ready")
    expect(progress).to_have_attribute("value", "100")  # kept across the swap
    # The table reloads itself once introspection ended: the bundle, its active version and agent.
    row = page.locator("#bundle-table tbody tr", has_text="weather")
    expect(row).to_contain_text("v1")
    expect(row.get_by_role("link", name="weather", exact=True)).to_have_count(2)  # the bundle, its agent
    shot(page, "upload-ready")

    row.locator('a[href="/bundles/weather/"]').click()
    expect(page.get_by_role("heading", level=1)).to_have_text("weather")
    expect(page.get_by_text("gateway: openai/gpt-4o-mini")).to_be_visible()
    expect(page.locator(".schema-field", has_text="city")).to_contain_text("City name, e.g. Paris")
    shot(page, "bundle-detail")


def test_rejected_uploads_show_their_line_and_column(live: LiveStack, page: Any) -> None:
    _, user = member_of_new_organization("grace")
    sign_in(page, live, user)
    page.goto("/bundles/")
    page.get_by_label("Bundle file").set_input_files(str(SYNTAX_ERROR))
    expect(page.get_by_label("Slug")).to_have_value("syntax-error")
    page.get_by_role("button", name="Upload").click()
    error = page.locator("#id_file_error")
    expect(error).to_contain_text("line 3, column 66")
    expect(error).to_contain_text('Expected "}" but found "tools"')
    # The refusal is next to the field, which has the focus, described by it.
    expect(page.get_by_label("Bundle file")).to_be_focused()
    expect(page.get_by_label("Bundle file")).to_have_attribute("aria-invalid", "true")
    shot(page, "syntax-error")

    # A bundle that parses but throws while loading is rejected by introspection, live.
    page.get_by_label("Bundle file").set_input_files(str(NO_AGENTS))
    page.get_by_role("button", name="Upload").click()
    status = page.locator(".upload-outcome [data-version-status]")
    expect(status).to_have_attribute("data-version-status", VersionStatus.REJECTED, timeout=30_000)
    expect(status).to_contain_text("createLightfast: at least one agent is required")
    expect(status).to_contain_text("Line 2, column 16")
    expect(page.locator("#bundle-table")).to_contain_text("Rejected")
    shot(page, "rejected-by-introspection")


def test_a_file_dropped_on_the_zone_uploads(live: LiveStack, page: Any) -> None:
    _, user = member_of_new_organization("hopper")
    sign_in(page, live, user)
    page.goto("/bundles/")
    source = WEATHER.read_text()
    # Playwright cannot drag a file from the desktop: build the same drop event in the page.
    page.locator("[data-dropzone]").evaluate(
        """(zone, source) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([source], "weather.mjs", { type: "text/javascript" }));
            for (const type of ["dragenter", "dragover", "drop"]) {
                const init = { bubbles: true, cancelable: true, dataTransfer: transfer };
                zone.dispatchEvent(new DragEvent(type, init));
            }
        }""",
        source,
    )
    expect(page.get_by_label("Slug")).to_have_value("weather")
    page.get_by_label("Slug").fill("dropped")
    page.get_by_label("Slug").press("Enter")
    status = page.locator(".upload-outcome [data-version-status]")
    expect(status).to_have_attribute("data-version-status", VersionStatus.READY, timeout=30_000)
    expect(page.locator("#bundle-table")).to_contain_text("dropped")


def test_the_tool_playground_invokes_the_tool(live: LiveStack, page: Any, settings: Any) -> None:
    organization, user = member_of_new_organization("lovelace")
    ready_weather_bundle(live, organization, settings)
    sign_in(page, live, user)
    page.goto("/bundles/weather/")
    page.get_by_role("link", name="Try getWeather in the playground").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("getWeather")
    page.get_by_label("city").fill("Paris")
    page.get_by_label("unit").select_option(label="fahrenheit")
    shot(page, "playground-filled")
    page.get_by_role("button", name="Invoke").click()
    result = page.get_by_role("region", name="Result")
    expect(result.locator(".tool-output")).to_contain_text('"city": "Paris"')
    expect(result.locator(".tool-output")).to_contain_text('"unit": "fahrenheit"')
    expect(result.locator(".logs")).to_contain_text("weather lookup for Paris")
    expect(result).to_contain_text("CPU")
    shot(page, "playground-result")


def test_the_bundle_pages_fit_a_phone(live: LiveStack, phone_page: Any, settings: Any) -> None:
    organization, user = member_of_new_organization("babbage")
    ready_weather_bundle(live, organization, settings)
    sign_in(phone_page, live, user)
    for path in ("/bundles/", "/bundles/weather/", "/bundles/weather/tools/getWeather/"):
        phone_page.goto(path)
        expect(phone_page.get_by_role("heading", level=1)).to_be_visible()
        assert no_sideways_scroll(phone_page), path
    shot(phone_page, "bundle-phone")
