"""The chat pages through Django's test client: the agents and chats listed, a new chat and a stored one (its
messages as the AI SDK's UI messages, a run still going named for the page to resume), another organization's
chats 404; and the chat endpoint as the page calls it, with the session cookie and the CSRF header."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.http import StreamingHttpResponse
from django.test import Client

from agents.models import BundleVersion
from execution.models import ChatSession, MessageRole, Run, RunStatus
from execution.services import chat_session_get_or_create, message_create
from organizations.models import Role
from tests.bundles import manifest_version

pytestmark = pytest.mark.django_db


def page_data(html: str, element_id: str) -> Any:
    """The JSON of a `{% json_script %}` element."""
    start = html.index(f'<script id="{element_id}" type="application/json">')
    return json.loads(html[start:].split(">", 1)[1].split("</script>", 1)[0])


def stored_chat(version: BundleVersion, *, public_id: str, status: str = RunStatus.SUCCEEDED) -> Run:
    """A chat with one turn (a user message and the answer), and the run of that turn."""
    session = chat_session_get_or_create(
        organization=version.organization, agent="weather/weather", public_id=public_id
    )
    run = Run.objects.create(
        organization=version.organization,
        bundle_version=version,
        agent_key="weather",
        session=session,
        status=status,
    )
    text = [{"type": "text", "text": "Hello there"}]
    message_create(session=session, role=MessageRole.USER, parts=text, run=run, public_id="u1")
    if status == RunStatus.SUCCEEDED:
        answer = [{"type": "step-start"}, {"type": "text", "text": "Hi!"}]
        message_create(
            session=session, role=MessageRole.ASSISTANT, parts=answer, run=run, public_id=f"msg_{run.pk.hex}"
        )
    return run


def test_the_chat_index_lists_agents_and_chats(alice: Any, bob: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization)
    stored_chat(version, public_id="chat-1")
    html = member_client(alice.users[Role.VIEWER]).get("/chat/").content.decode()
    assert 'href="/chat/weather/weather/"' in html
    assert 'href="/chat/weather/weather/chat-1/"' in html and "Hello there" in html
    other = member_client(bob.owner).get("/chat/").content.decode()
    assert "/chat/weather/weather/" not in other and "Hello there" not in other


def test_a_new_chat_names_the_endpoint_and_has_no_messages(alice: Any, bob: Any, member_client: Any) -> None:
    manifest_version(alice.organization)
    html = member_client(alice.owner).get("/chat/weather/weather/").content.decode()
    assert 'data-api="/api/v1/chat/weather/weather"' in html and 'data-chat-id=""' in html
    assert page_data(html, "chat-messages-data") == []
    assert '<label for="chat-message">Message</label>' in html
    assert ">Send</button>" in html and ">Stop</button>" in html
    assert member_client(bob.owner).get("/chat/weather/weather/").status_code == 404
    assert member_client(alice.owner).get("/chat/weather/nobody/").status_code == 404


def test_a_stored_chat_shows_its_messages_as_ui_messages(alice: Any, bob: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization)
    run = stored_chat(version, public_id="team/chat 1")  # chat ids may hold `/` and spaces
    response = member_client(alice.owner).get("/chat/weather/weather/team/chat%201/")
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-chat-id="team/chat 1"' in html and 'data-active-run=""' in html
    meta = {"runId": str(run.pk)}
    assert page_data(html, "chat-messages-data") == [
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hello there"}], "metadata": meta},
        {
            "id": f"msg_{run.pk.hex}",
            "role": "assistant",
            "parts": [{"type": "step-start"}, {"type": "text", "text": "Hi!"}],
            "metadata": meta,
        },
    ]
    assert 'aria-current="page"' in html.split('class="session-list"')[1]
    # Another organization's chat, and a chat of another agent, are not found.
    assert member_client(bob.owner).get("/chat/weather/weather/team/chat%201/").status_code == 404
    ChatSession.objects.filter(public_id="team/chat 1").update(agent="weather/other")
    assert member_client(alice.owner).get("/chat/weather/weather/team/chat%201/").status_code == 404


def test_a_chat_whose_run_is_still_going_names_it_for_the_page(alice: Any, member_client: Any) -> None:
    version = manifest_version(alice.organization)
    run = stored_chat(version, public_id="chat-2", status=RunStatus.RUNNING)
    html = member_client(alice.owner).get("/chat/weather/weather/chat-2/").content.decode()
    assert f'data-active-run="{run.pk}"' in html
    assert [message["role"] for message in page_data(html, "chat-messages-data")] == ["user"]


def test_viewers_read_chats_but_cannot_send(alice: Any, member_client: Any) -> None:
    manifest_version(alice.organization)
    html = member_client(alice.users[Role.VIEWER]).get("/chat/weather/weather/").content.decode()
    assert 'id="chat-send" disabled' in html


@pytest.mark.django_db(transaction=True)  # the run starts on a thread of its own as the stream is read
def test_the_chat_endpoint_takes_the_pages_session_and_csrf_header(alice: Any) -> None:
    """What chat.js sends: the session cookie, X-CSRFToken and X-Organization; the JSON body read first."""
    manifest_version(alice.organization, manifest=None)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice.owner)
    token = str(client.get("/chat/weather/weather/").context["csrf_token"])
    body = {
        "id": "csrf-chat",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hello"}]}],
        "trigger": "submit-message",
        "resumable": True,
    }
    headers = {"X-Organization": alice.organization.slug}
    url = "/api/v1/chat/weather/weather"
    refused = client.post(url, json.dumps(body), "application/json", headers=headers)
    assert refused.status_code == 403 and "CSRF" in refused.content.decode()
    accepted = client.post(
        url,
        json.dumps(body),
        "application/json",
        headers={**headers, "X-CSRFToken": token},
    )
    assert accepted.status_code == 200 and accepted["Content-Type"] == "text/event-stream"
    # The head goes out once the turn is checked; the run starts as the stream is read.
    started = Run.objects.filter(organization=alice.organization, session__public_id="csrf-chat")

    assert isinstance(accepted, StreamingHttpResponse)

    async def read_until_the_run_exists() -> None:
        reading = asyncio.ensure_future(anext(accepted.streaming_content))
        deadline = time.monotonic() + 10
        while not await database_sync_to_async(started.exists)() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        reading.cancel()  # a client that goes away (the body said it resumes: the run goes on)
        with contextlib.suppress(asyncio.CancelledError):
            await reading

    asyncio.run(read_until_the_run_exists())
    # One run of the chat (a Celery worker of another test may have run it meanwhile).
    assert started.count() == 1
