"""The chat page in a real browser (the AI SDK's own client against /api/v1/chat/...): streamed text and a
tool card with the tool's output, logs and time; Stop cancels the run mid-answer; reloading mid-answer
resumes the stream without losing or repeating text; chats are listed and resumable; a phone's width."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from execution.models import ChatSession, Run, RunStatus
from organizations.models import Organization
from organizations.services import Actor, model_provider_set
from tests.dashboard.browser_steps import member_of_new_organization, ready_weather_bundle, sign_in
from tests.dashboard.live import LiveStack, console_watch, no_sideways_scroll, shot
from tests.execution.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Records every text an answer showed (each delta replaces the text node), to see it grow token by token.
RECORD_TEXTS = """
window.__answerTexts = [];
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node.nodeType === Node.TEXT_NODE && node.parentElement?.closest(".msg-assistant .msg-text")) {
        window.__answerTexts.push(node.data);
      }
    }
  }
}).observe(document, { childList: true, subtree: true });
"""

# The fake model echoes the message 16 characters at a time, one piece every DRIP seconds.
DRIP = 0.2
QUESTION = "Tell me, slowly and in order, every detail of the weather in Paris today. "
LONG_MESSAGE = QUESTION * 4 + f"#drip={DRIP}"
LONG_ANSWER = f"Echo: {LONG_MESSAGE}"


@pytest.fixture
def fake_model() -> Iterator[FakeOpenAI]:
    """A local OpenAI-compatible server (the one allowed stand-in for a model provider)."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()


def use_fake_model(organization: Organization, server: FakeOpenAI, settings: Any) -> None:
    """The organization's runs ask the fake server (its own provider setting, read by the worker per run)."""
    settings.LIGHTFAST_TEST_EGRESS_LOOPBACK = True  # the setting's check, in this process, allows loopback
    model_provider_set(
        organization=organization,
        base_url=server.base_url,
        model_map={},
        api_key="sk-test-organization",
        actor=Actor.system("tests"),
    )


def open_chat(page: Any, live: LiveStack, user: Any) -> None:
    sign_in(page, live, user)
    page.add_init_script(RECORD_TEXTS)
    page.goto("/chat/")
    page.get_by_role("link", name="weather/weather").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Chat with weather/weather")
    # chat.js has bound its handlers: it sets data-status on #chat just before. Until then Enter in
    # the textarea sends nothing (seen once on a loaded machine: the message stayed in the box).
    expect(page.locator("#chat[data-status]")).to_have_count(1)


def send(page: Any, text: str) -> None:
    page.get_by_label("Message").fill(text)
    page.get_by_role("button", name="Send").click()


def answer_text(page: Any) -> str:
    return str(page.locator(".msg-assistant .msg-text").last.text_content() or "")


def wait_for_answer_length(
    page: Any, at_least: int, organization: Organization, timeout_s: float = 15.0
) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if page.locator(".msg-assistant .msg-text").count():
            text = answer_text(page)
            if len(text) >= at_least:
                return text
        page.wait_for_timeout(50)
    raise AssertionError(
        f"the answer did not reach {at_least} characters: {answer_text(page)!r}; "
        + runs_seen(organization, page)
    )


def runs_seen(organization: Organization, page: Any) -> str:
    """What the server and the page show of the organization's runs (for a failure's message)."""
    runs = [
        f"{run.pk} {run.status} {run.error_type or ''} {run.error_message[:200]!r}"
        f" created {run.created_at:%H:%M:%S.%f} started {run.started_at and f'{run.started_at:%H:%M:%S.%f}'}"
        f" events {[event.type for event in run.events.order_by('seq')][:20]}"
        for run in Run.objects.filter(organization=organization).order_by("created_at")
    ]
    alerts = page.get_by_role("alert").all_text_contents()
    return f"runs: {runs or 'none'}; alerts on the page: {alerts}"


def run_of_session(organization: Organization, status: str | None = None, timeout_s: float = 10.0) -> Run:
    """The newest run of the organization's only chat, once it has `status` (if given)."""
    deadline = time.monotonic() + timeout_s
    while True:
        run = Run.objects.filter(organization=organization).order_by("-created_at").first()
        if run is not None and (status is None or run.status == status):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"no run reached {status}: {run and run.status}")
        time.sleep(0.1)


def test_the_answer_streams_and_the_tool_call_is_a_card(live: LiveStack, page: Any, settings: Any) -> None:
    organization, user = member_of_new_organization("ada")
    ready_weather_bundle(live, organization, settings)
    open_chat(page, live, user)
    shot(page, "chat-empty")
    send(page, 'getWeather {"city": "Paris"}')
    expect(page.locator(".msg-user .msg-text")).to_have_text('getWeather {"city": "Paris"}')
    card = page.locator("details.tool-card", has_text="getWeather")
    expect(card).to_be_visible()
    answer = page.locator(".msg-assistant .msg-text").last
    returned = 'Demo model (offline): getWeather returned {"city":"Paris"'
    expect(answer).to_contain_text(returned, timeout=15_000)
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    # Token by token: each step's text grew in pieces (the demo model sends four words at a time).
    final = answer_text(page)
    texts = [text for text in page.evaluate("window.__answerTexts") if text]
    assert texts[:2] == ["Demo model (offline): calling", "Demo model (offline): calling getWeather."], texts
    assert texts[-1] == final and any(final.startswith(text) and text != final for text in texts), texts

    card.locator("summary").click()
    expect(card.locator(".tool-input")).to_contain_text('"city": "Paris"')
    expect(card.locator(".tool-output")).to_contain_text('"city": "Paris"')
    expect(card.locator(".tool-output")).to_contain_text('"condition"')
    expect(card.locator(".tool-logs")).to_contain_text("weather lookup for Paris")
    expect(card.locator(".tool-time-text")).to_contain_text(" ms")
    expect(card.locator(".tool-state")).to_have_text("done")
    shot(page, "chat-tool-card")

    # The chat has its own URL now, is listed, and shows its history when opened again.
    session = ChatSession.objects.get(organization=organization)
    expect(page).to_have_url(live.url(f"/chat/weather/weather/{session.public_id}/"))
    page.goto("/chat/weather/weather/")
    sessions = page.get_by_role("navigation", name="Chats with weather")
    sessions.get_by_role("link", name='getWeather {"city": "Paris"}').click()
    expect(page.locator(".msg-assistant .msg-text").last).to_have_text(final)
    expect(page.locator("details.tool-card")).to_have_count(1)
    page.locator("details.tool-card summary").click()
    expect(page.locator(".tool-logs")).to_contain_text("weather lookup for Paris")
    shot(page, "chat-resumed-session")


def test_stop_cancels_the_run_mid_answer(
    live: LiveStack, page: Any, settings: Any, fake_model: FakeOpenAI
) -> None:
    organization, user = member_of_new_organization("grace")
    ready_weather_bundle(live, organization, settings)
    use_fake_model(organization, fake_model, settings)
    open_chat(page, live, user)
    send(page, LONG_MESSAGE)
    wait_for_answer_length(page, 40, organization)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#chat-status")).to_have_text("Stopped.")
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    run = run_of_session(organization, RunStatus.CANCELLED)
    assert run.error_type == "cancelled"
    stopped_at = answer_text(page)
    page.wait_for_timeout(int(DRIP * 4 * 1000))
    assert answer_text(page) == stopped_at, "the answer kept growing after Stop"
    assert 0 < len(stopped_at) < len(LONG_ANSWER) and LONG_ANSWER.startswith(stopped_at)
    shot(page, "chat-stopped")

    # The chat goes on: the next message is answered in full, after the stopped one.
    send(page, "And tomorrow?")
    expect(page.locator(".msg-assistant .msg-text").last).to_have_text("Echo: And tomorrow?", timeout=15_000)
    expect(page.locator(".msg-assistant")).to_have_count(2)


def test_reloading_mid_answer_resumes_without_losing_or_repeating_text(
    live: LiveStack, page: Any, settings: Any, fake_model: FakeOpenAI
) -> None:
    organization, user = member_of_new_organization("hopper")
    ready_weather_bundle(live, organization, settings)
    use_fake_model(organization, fake_model, settings)
    open_chat(page, live, user)
    send(page, LONG_MESSAGE)
    before = wait_for_answer_length(page, 48, organization)
    assert len(before) < len(LONG_ANSWER)
    assert run_of_session(organization).status == RunStatus.RUNNING
    page.reload()
    # The page resumed the run still going: its text again from the start, then the rest as it streams.
    expect(page.locator(".msg-assistant .msg-text")).to_have_text(LONG_ANSWER, timeout=30_000)
    expect(page.locator(".msg-user")).to_have_count(1)
    expect(page.locator(".msg-assistant")).to_have_count(1)
    texts = [text for text in page.evaluate("window.__answerTexts") if text]
    assert all(LONG_ANSWER.startswith(text) for text in texts), texts
    assert any(len(text) < len(LONG_ANSWER) for text in texts), "the answer ended before the page resumed"
    assert run_of_session(organization, RunStatus.SUCCEEDED).status == RunStatus.SUCCEEDED  # not cancelled
    shot(page, "chat-resumed-after-reload")


def test_a_refused_message_says_why(live: LiveStack, page: Any, settings: Any, request: Any) -> None:
    console_watch(request).allow("status of 403", reason="the chat endpoint refuses the message (quota)")
    organization, user = member_of_new_organization("lovelace")
    ready_weather_bundle(live, organization, settings)
    Organization.objects.filter(pk=organization.pk).update(runs_per_month=0)
    open_chat(page, live, user)
    send(page, "Hello?")
    error = page.get_by_role("alert")
    expect(error).to_contain_text("Quota runs_per_month exceeded: limit 0, used 0")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_role("button", name="Stop")).to_be_disabled()
    # The chat never started on the server: the page stays a new chat (a reload must not be a 404).
    expect(page).to_have_url(live.url("/chat/weather/weather/"))
    shot(page, "chat-refused")


def test_the_chat_fits_a_phone(live: LiveStack, phone_page: Any, settings: Any) -> None:
    organization, user = member_of_new_organization("babbage")
    ready_weather_bundle(live, organization, settings)
    open_chat(phone_page, live, user)
    # By keyboard: Enter in the message sends it.
    message = phone_page.get_by_label("Message")
    message.fill('getWeather {"city": "Reykjavik, a city with a rather long name for a small screen"}')
    message.press("Enter")
    expect(phone_page.locator(".msg-assistant .msg-text").last).to_contain_text("returned", timeout=15_000)
    phone_page.locator("details.tool-card summary").click()
    expect(phone_page.locator(".tool-output")).to_contain_text("Reykjavik")
    assert no_sideways_scroll(phone_page)
    shot(phone_page, "chat-phone")
