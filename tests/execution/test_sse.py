"""The AI SDK chat endpoint over Server-Sent Events, through a real web server and a real Celery worker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from execution.events import event_append_many
from execution.selectors import run_events_after
from execution.services import run_start
from tests.bundles import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    public_seqs,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/api/v1/chat/weather/weather"


def use_chat_body(text: str, chat_id: str = "chat-sse") -> dict[str, Any]:
    """What AI SDK v5 `useChat` (DefaultChatTransport) posts."""
    return {
        "id": chat_id,
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": text}]}],
        "trigger": "submit-message",
        "messageId": None,
    }


def sse_events(raw: str) -> list[dict[str, str]]:
    """Split an SSE body into events of their fields (strictly: each event ends with a blank line)."""
    assert raw.endswith("\n\n"), raw[-80:]
    events = []
    for block in raw[:-2].split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        events.append(fields)
    return events


def test_use_chat_post_streams_the_ui_message_stream(
    alice: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    headers = {"Authorization": f"Bearer {alice.keys['all']}"}
    body = use_chat_body('Weather? getWeather {"city": "Paris"}')
    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        response = client.post(CHAT, json=body, headers=headers)
    assert response.status_code == 200, (response.headers, response.content)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    events = sse_events(response.text)
    assert events[-1] == {"data": "[DONE]"}
    run_id = events[0]["id"].split(":")[0]
    # Every event but the tool's private log lines, in order.
    assert [event["id"] for event in events[:-1]] == [f"{run_id}:{seq}" for seq in public_seqs(run_id)]
    chunks = [json.loads(event["data"]) for event in events[:-1]]
    stored = [event.chunk() for event in run_events_after(run_id, 0)]
    assert chunks == [chunk for chunk in stored if not chunk.get("private")]
    assert any(chunk["type"] == "data-log" for chunk in stored)
    kinds = [chunk["type"] for chunk in chunks]
    assert kinds[0] == "start" and "text-delta" in kinds and "finish" in kinds
    tool = next(chunk for chunk in chunks if chunk["type"] == "tool-output-available")
    assert tool["output"]["city"] == "Paris"

    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        # Resume after seq 3: the rest, once, then [DONE].
        resumed = client.get(CHAT, headers={**headers, "Last-Event-ID": f"{run_id}:3"})
        assert resumed.status_code == 200
        assert [event["id"] for event in sse_events(resumed.text)[:-1]] == [e["id"] for e in events[3:-1]]
        # The AI SDK's reconnect: nothing is running in this chat any more.
        assert client.get(f"{CHAT}/chat-sse/stream", headers=headers).status_code == 204
        # The same chat continues with the older `content` message form; history stays server-side.
        older = {"id": "chat-sse", "messages": [{"role": "user", "content": "And now?"}]}
        again = client.post(CHAT, json=older, headers=headers)
    assert again.status_code == 200 and sse_events(again.text)[-1] == {"data": "[DONE]"}
    messages = alice.organization.chat_sessions.get(public_id="chat-sse").messages.all()
    assert [message.role for message in messages] == ["user", "assistant", "user", "assistant"]


def test_resume_of_a_live_run_tails_it_until_the_end(alice: Any, asgi_server: Any) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    event_append_many(run, [("start", {"messageId": "m"}), ("text-start", {"id": "t"})])
    headers = {"Authorization": f"Bearer {alice.keys['read']}", "Last-Event-ID": f"{run.pk}:1"}
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        with client.stream("GET", CHAT, headers=headers) as response:
            lines = response.iter_lines()
            assert next(lines) == f"id: {run.pk}:2"
            assert json.loads(next(lines).removeprefix("data: ")) == {"type": "text-start", "id": "t"}
            event_append_many(
                run,
                [
                    ("text-delta", {"id": "t", "delta": "live"}),
                    ("data-status", {"data": {"status": "cancelled"}}),
                ],
            )
            rest = "\n".join(lines)
    assert f"id: {run.pk}:3" in rest and '"delta":"live"' in rest and rest.rstrip().endswith("data: [DONE]")


def test_errors_are_json_and_other_tenants_get_404(alice: Any, bob: Any, asgi_server: Any) -> None:
    version = manifest_version(alice.organization)
    manifest_version(bob.organization, slug="other")
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        cases = [
            ("POST", CHAT, bob.keys["all"], use_chat_body("hi"), {}, 404, "not_found"),
            ("GET", CHAT, bob.keys["all"], None, {"Last-Event-ID": f"{run.pk}:0"}, 404, "not_found"),
            ("POST", CHAT, None, use_chat_body("hi"), {}, 401, "not_authenticated"),
            ("POST", CHAT, alice.keys["read"], use_chat_body("hi"), {}, 403, "permission_denied"),
            ("POST", CHAT, alice.keys["all"], {"id": "x"}, {}, 400, "invalid_input"),
            (
                "POST",
                CHAT,
                alice.keys["all"],
                {"messages": [{"role": "assistant", "content": "x"}]},
                {},
                400,
                "invalid_input",
            ),
            ("GET", CHAT, alice.keys["all"], None, {}, 400, "invalid_input"),
            ("PUT", CHAT, alice.keys["all"], None, {}, 405, "method_not_allowed"),
        ]
        for method, path, key, body, extra, status, error_type in cases:
            headers = {
                "Accept": "application/json",
                **extra,
                **({"Authorization": f"Bearer {key}"} if key else {}),
            }
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == status, (method, path, response.text)
            assert response.json()["error"]["type"] == error_type
        malformed = client.post(
            CHAT, content=b"{not json", headers={"Authorization": f"Bearer {alice.keys['all']}"}
        )
        # Another organization's chat id is a chat this tenant never saw: no active stream.
        assert (
            client.get(
                f"{CHAT}/ses/stream", headers={"Authorization": f"Bearer {bob.keys['all']}"}
            ).status_code
            == 204
        )
        # The AI SDK's transport (its body has `trigger`, no JSON Accept) shows the body as
        # `error.message`: readable text, the error type in a header.
        refused = client.post(
            CHAT, json=use_chat_body("hi"), headers={"Authorization": f"Bearer {alice.keys['read']}"}
        )
    assert malformed.status_code == 400 and malformed.json()["error"]["type"] == "malformed_json"
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/plain")
    assert refused.text == "This action needs the `execute` scope."
    assert refused.headers["x-lightfast-error"] == "permission_denied"
