"""The dashboard in a real browser: keyboard-only sign-up, log-in, settings (a key shown once, copied),
an invitation accepted in another browser, switching organizations, the admin's organization page."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect

from execution.models import Run
from organizations.models import Role
from organizations.services import Actor, apikey_authenticate, org_create
from tests.bundles import manifest_version
from tests.dashboard.live import LiveStack, no_sideways_scroll, shot
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def log_in(page: Any, email: str, password: str = TEST_PASSWORD) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_sign_up_with_the_keyboard_alone(live: LiveStack, page: Any) -> None:
    page.goto("/accounts/signup/")
    expect(page.get_by_label("Email")).to_be_focused()  # autofocus
    page.keyboard.type("kay@example.com")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type("password")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Organization")).to_be_focused()
    page.keyboard.type("Keyboard Co")
    page.keyboard.press("Enter")
    # The server refused the password: the error is next to the field, the other values kept.
    expect(page.locator("#id_password_error")).to_contain_text("too common")
    expect(page.get_by_label("Email")).to_have_value("kay@example.com")
    shot(page, "password-error")
    page.get_by_label("Password").fill("an excellent passphrase")
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Keyboard Co")
    # The skip link is the first stop, and it moves focus to the content.
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_a_new_api_key_is_shown_once_with_a_copy_button(live: LiveStack, page: Any) -> None:
    owner = MembershipFactory(user=UserFactory(username="olga@example.com"), role=Role.OWNER)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.base_url)
    log_in(page, "olga@example.com")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Settings").click()
    page.get_by_label("Key name").fill("deploy bot")
    page.get_by_role("button", name="Create", exact=True).click()
    new_key = page.get_by_label("New API key")
    raw_key = new_key.input_value()
    assert raw_key.startswith("lf_live_")
    assert apikey_authenticate(raw_key=raw_key).organization == owner.organization
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == raw_key
    shot(page, "key-shown-once")
    page.goto("/settings/")  # the key lived only in the answer to the form; it is stored nowhere
    expect(page.get_by_label("New API key")).to_have_count(0)
    expect(page.get_by_role("cell", name="deploy bot", exact=True)).to_be_visible()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke deploy bot").click()
    expect(page.get_by_text("Revoked deploy bot.")).to_be_visible()
    expect(page.locator(".status-revoked")).to_have_count(1)
    shot(page, "key-revoked")


def test_an_invitation_link_is_copied_and_accepted_in_another_browser(
    live: LiveStack, page: Any, chromium: Any
) -> None:
    MembershipFactory(user=UserFactory(username="olga@example.com"), role=Role.OWNER)
    log_in(page, "olga@example.com")
    page.goto("/settings/#members")
    page.get_by_label("Role", exact=True).select_option("admin")
    page.get_by_role("button", name="Create invitation link").click()
    link = page.get_by_label("Invitation link").input_value()
    assert link.startswith(f"{live.base_url}/accounts/invite/")
    shot(page, "invitation-created")

    other = chromium.new_context(viewport={"width": 375, "height": 740})
    try:
        guest = other.new_page()
        guest.goto(link)
        expect(guest.get_by_role("heading", level=1)).to_contain_text("Join")
        guest.get_by_label("Email").fill("newbie@example.com")
        guest.get_by_label("Password").fill("another fine passphrase")
        guest.get_by_role("button", name="Sign up and join").click()
        expect(guest.get_by_text("Welcome to")).to_be_visible()
        assert no_sideways_scroll(guest)
        shot(guest, "invitation-accepted")
    finally:
        other.close()
    page.goto("/settings/#members")
    expect(page.get_by_role("cell", name="newbie@example.com", exact=True).first).to_be_visible()
    expect(page.locator(".status-accepted")).to_have_count(1)


def test_switching_organizations(live: LiveStack, page: Any) -> None:
    owner = MembershipFactory(user=UserFactory(username="olga@example.com"), role=Role.OWNER)
    org_create(slug="second-org", name="Second Org", owner=owner.user, actor=Actor.for_user(owner.user))
    log_in(page, "olga@example.com")
    expect(page.get_by_role("heading", level=1)).to_have_text(owner.organization.name)
    page.get_by_label("Organization").select_option(label="Second Org")  # submits on change
    expect(page.get_by_role("heading", level=1)).to_have_text("Second Org")
    shot(page, "switched")


def test_settings_fit_a_phone(live: LiveStack, phone_page: Any) -> None:
    MembershipFactory(user=UserFactory(username="olga@example.com"), role=Role.OWNER)
    log_in(phone_page, "olga@example.com")
    phone_page.goto("/settings/")
    phone_page.get_by_label("Host", exact=True).fill("not a host!")
    phone_page.get_by_role("button", name="Allow").click()
    expect(phone_page.locator("#id_egress-pattern_error")).to_be_visible()
    assert no_sideways_scroll(phone_page)
    shot(phone_page, "settings-phone")


def test_the_admins_organization_page_renders_usage_as_a_table(live: LiveStack, page: Any) -> None:
    member = MembershipFactory(role=Role.OWNER)
    get_user_model().objects.create_superuser("root@example.com", "root@example.com", TEST_PASSWORD)
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("root@example.com")
    page.get_by_label("Password").fill(TEST_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/admin/organizations/organization/{member.organization.pk}/change/")
    usage = page.locator("table.lightfast-usage")
    expect(usage.get_by_role("columnheader", name="Quota")).to_be_visible()
    expect(usage.locator("tbody tr")).to_have_count(5)
    expect(usage.get_by_role("cell", name="runs_per_month")).to_be_visible()
    expect(page.get_by_text("<br>")).to_have_count(0)
    # The admin's own stylesheet is served (WhiteNoise): the header has its colour.
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
        != "rgba(0, 0, 0, 0)"
    )
    shot(page, "admin-organization")


def test_the_overviews_recent_runs_refresh_by_themselves(live: LiveStack, page: Any) -> None:
    owner = MembershipFactory(user=UserFactory(username="olga@example.com"), role=Role.OWNER)
    version = manifest_version(owner.organization)
    log_in(page, "olga@example.com")
    runs = page.locator("#recent-runs")
    expect(runs).to_contain_text("No runs yet.")
    Run.objects.create(organization=owner.organization, bundle_version=version, agent_key="weather")
    # htmx polls the fragment every 5 s (under the page's Content-Security-Policy).
    expect(runs.get_by_role("cell", name="weather/weather")).to_be_visible(timeout=12_000)
    expect(runs.get_by_text("Queued")).to_be_visible()
    shot(page, "recent-runs")
