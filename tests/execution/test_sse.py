"""The AI SDK chat endpoint over Server-Sent Events, through a real web server and a real Celery worker."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async

from execution.events import event_append_many
from execution.selectors import run_events_after
from execution.services import run_start
from tests.bundles import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    channel_subscriptions,
    public_seqs,
    subscriptions_left,
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


def test_a_stream_that_ended_leaves_no_subscription_in_redis(
    alice: Any, asgi_server: Any, redis_server: str
) -> None:
    # channels_redis unsubscribes a private channel only when a receive on it is cancelled; a
    # stream whose last receive completed (or that never needed one) must drop its channel itself.
    version = manifest_version(alice.organization)
    before = channel_subscriptions(redis_server)
    headers = {"Authorization": f"Bearer {alice.keys['read']}"}
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        # A run that already ended: the replay reads it whole, no notification is awaited.
        ended = run_start(
            organization=alice.organization, bundle_version=version, agent_key="weather", text="a"
        )
        event_append_many(
            ended, [("start", {"messageId": "m"}), ("data-status", {"data": {"status": "cancelled"}})]
        )
        replayed = client.get(CHAT, headers={**headers, "Last-Event-ID": f"{ended.pk}:0"})
        assert sse_events(replayed.text)[-1] == {"data": "[DONE]"}
        # A live run: its last event arrives as a notification, the receive that got it completed.
        live = run_start(
            organization=alice.organization, bundle_version=version, agent_key="weather", text="b"
        )
        event_append_many(live, [("start", {"messageId": "m"})])
        with client.stream("GET", CHAT, headers={**headers, "Last-Event-ID": f"{live.pk}:0"}) as response:
            lines = response.iter_lines()
            assert next(lines) == f"id: {live.pk}:1"
            event_append_many(live, [("data-status", {"data": {"status": "cancelled"}})])
            assert "\n".join(lines).rstrip().endswith("data: [DONE]")
    assert subscriptions_left(redis_server, before) == set()


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


def test_a_refused_turn_is_answered_before_the_head_with_its_status(alice: Any, asgi_server: Any) -> None:
    """The head goes out before the run starts, so every refusal of a turn is checked before it."""
    from execution.models import ChatSession, Run
    from organizations.models import Organization

    version = manifest_version(alice.organization)
    ChatSession.objects.create(organization=alice.organization, agent="weather/other", public_id="theirs")
    # The one run slot is taken by a queued run.
    Organization.objects.filter(pk=alice.organization.pk).update(concurrent_runs=1)
    alice.organization.refresh_from_db()
    run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    headers = {"Authorization": f"Bearer {alice.keys['all']}", "Accept": "application/json"}
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        busy = client.post(CHAT, json=use_chat_body("hi", chat_id="new-chat"), headers=headers)
        Organization.objects.filter(pk=alice.organization.pk).update(concurrent_runs=10)
        other_agent = client.post(CHAT, json=use_chat_body("hi", chat_id="theirs"), headers=headers)
        long_id = client.post(CHAT, json=use_chat_body("hi", chat_id="x" * 201), headers=headers)
    assert busy.status_code == 403, busy.text
    assert busy.json()["error"]["type"] == "quota_exceeded"
    assert busy.json()["error"]["detail"] == {
        "quota": "concurrent_runs",
        "limit": 1,
        "used": 1,
        "resets_at": None,
    }
    assert other_agent.status_code == 400, other_agent.text
    assert other_agent.json()["error"]["message"] == "That session belongs to another agent."
    # The chat's id is `id` in this body: the refusal names it.
    assert long_id.status_code == 400, long_id.text
    assert long_id.json()["error"]["message"].startswith("The chat's id (`id` or `session`)")
    assert Run.objects.count() == 1 and not ChatSession.objects.filter(public_id="new-chat").exists()


def _key_tenant(world: Any) -> Any:
    """The tenant of `world`'s all-scopes key, as the chat view's authentication makes it."""
    from organizations.models import Scope
    from organizations.services import Actor
    from organizations.tenancy import Tenant

    key = world.api_keys["all"]
    return Tenant(
        organization=world.organization,
        scopes=frozenset(Scope.values),
        actor=Actor.for_api_key(key),
        api_key=key,
    )


def _stream_text(start: Any, tenant: Any) -> str:
    """What `_frames_after_start` streams for a start that never reaches the run's events."""
    import asyncio

    from execution.sse import _frames_after_start

    async def read() -> str:
        frames = _frames_after_start(start, tenant, cancel_on_disconnect=True)
        return "".join([text async for text in frames])

    return asyncio.run(read())


def test_a_start_refused_after_the_head_ends_the_stream_with_an_error_chunk(alice: Any) -> None:
    """A turn that lost a race after its checks (the last run slot, the database gone) ends its stream
    with the AI SDK's `error` chunk and `[DONE]`, the error classified; a key revoked since the
    request was authenticated ends it with the `error` chunk alone, as it would mid-run."""
    from django.db import OperationalError

    from organizations.quotas import QuotaExceeded

    def lost_the_slot(run_id: Any) -> Any:
        raise QuotaExceeded(quota="concurrent_runs", limit=1, used=1, resets_at=None)

    def database_gone(run_id: Any) -> Any:
        raise OperationalError("connection refused")

    tenant = _key_tenant(alice)
    refused = sse_events(_stream_text(lost_the_slot, tenant))
    assert [event["data"] for event in refused][1:] == ["[DONE]"]
    assert json.loads(refused[0]["data"]) == {
        "type": "error",
        "errorText": "quota_exceeded: Quota concurrent_runs exceeded: limit 1, used 1.",
    }
    unavailable = sse_events(_stream_text(database_gone, tenant))
    assert json.loads(unavailable[0]["data"])["errorText"].startswith("service_unavailable: ")
    assert unavailable[1] == {"data": "[DONE]"}

    # The start's hop re-reads the credentials (the stream had joined their groups): a key revoked
    # after the request was authenticated starts no run.
    from organizations.services import Actor, apikey_revoke

    started: list[Any] = []
    apikey_revoke(api_key=alice.api_keys["all"], actor=Actor.for_user(alice.owner))
    revoked = sse_events(_stream_text(started.append, tenant))
    assert json.loads(revoked[0]["data"]) == {
        "type": "error",
        "errorText": "credentials_revoked: The API key was revoked.",
    }
    assert len(revoked) == 1  # as a stream whose key is revoked mid-run: no `[DONE]`
    assert started == []


def test_a_client_gone_while_its_run_starts_gets_the_run_cancelled(alice: Any) -> None:
    """The AI SDK's `stop()` right after the head: the start completes, and its run is cancelled."""
    import asyncio
    import threading
    import time

    from execution.models import Run, RunStatus
    from execution.sse import _frames_after_start

    version = manifest_version(alice.organization)
    release = threading.Event()
    started: list[Any] = []

    def slow_start(run_id: Any) -> Any:
        release.wait(10)
        run = run_start(
            organization=alice.organization, bundle_version=version, agent_key="weather", text="hi"
        )
        started.append(run)
        return run

    async def client_goes_away() -> None:
        frames = _frames_after_start(slow_start, _key_tenant(alice), cancel_on_disconnect=True)
        reading = asyncio.ensure_future(anext(frames))
        await asyncio.sleep(0.2)
        reading.cancel()  # what the server does when the client disconnects
        try:
            await reading
        except asyncio.CancelledError:
            pass
        release.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if (
                started
                and await database_sync_to_async(
                    lambda: Run.objects.get(pk=started[0].pk).status == RunStatus.CANCELLED
                )()
            ):
                return
        raise AssertionError("the run of the client that went away was not cancelled")

    asyncio.run(client_goes_away())
    assert Run.objects.get(pk=started[0].pk).error_type == "cancelled"
