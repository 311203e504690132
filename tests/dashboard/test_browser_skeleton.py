"""The dashboard's frame in a real browser: sign-up lands on the overview, the navigation, the API docs."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from tests.dashboard.live import LiveStack, console_watch, no_sideways_scroll, shot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_signing_up_lands_on_the_overview_with_the_navigation(live: LiveStack, page: Any) -> None:
    page.goto("/")
    expect(page).to_have_url(live.url("/accounts/login/?next=/"))
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill("ada@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Analytical Engines")
    shot(page, "signup-filled")
    page.get_by_role("button", name="Sign up").click()
    expect(page).to_have_url(live.url("/"))
    expect(page.get_by_role("heading", level=1)).to_have_text("Analytical Engines")
    nav = page.get_by_role("navigation", name="Main")
    for label in ("Overview", "Bundles", "Chat", "Runs", "Usage", "Settings"):
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    expect(nav.get_by_role("link", name="Overview")).to_have_attribute("aria-current", "page")
    expect(page.get_by_text("Runs this month")).to_be_visible()
    shot(page, "overview")
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(live.url("/accounts/login/"))


def test_the_overview_fits_a_phone(live: LiveStack, phone_page: Any) -> None:
    page = phone_page
    page.goto("/accounts/signup/")
    assert no_sideways_scroll(page)
    page.get_by_label("Email").fill("grace@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_label("Organization").fill("Compilers Incorporated With A Very Long Name Indeed")
    page.get_by_label("Organization").press("Enter")
    expect(page.get_by_role("heading", level=1)).to_be_visible()
    assert no_sideways_scroll(page)
    shot(page, "overview-phone")


REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def test_swagger_ui_and_redoc_render_from_local_files(
    live: LiveStack, page: Any, request: pytest.FixtureRequest
) -> None:
    # ReDoc's side menu always shows its vendor's logo from a CDN (no option turns it off); offline the
    # image fails and ReDoc hides it. Everything else must come from the platform.
    console_watch(request).allow(REDOC_LOGO, reason="ReDoc's hard-coded attribution logo")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Lightfast Cloud API", timeout=20_000)
    expect(page.locator(".opblock").first).to_be_visible()
    shot(page, "swagger-ui")
    page.goto("/api/v1/redoc/")
    expect(page.get_by_role("heading", name="Lightfast Cloud API")).to_be_visible(timeout=20_000)
    shot(page, "redoc")
    local = (live.base_url, f"blob:{live.base_url}")  # ReDoc runs its search in a worker from a blob
    foreign = [url for url in requested if not url.startswith(local) and url != REDOC_LOGO]
    assert requested and not foreign, foreign
