"""The chat request contract beyond what the AI SDK acceptance tests drive: bounds, opt-ins, flags, pings."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from django.db import connection

from agents.models import AgentManifest
from execution.agent_loop import AssistantTurn
from execution.models import ChatSession, Run, RunStatus
from execution.selectors import agent_target_resolve
from execution.services import chat as chat_service
from execution.services import chat_run_start, run_cancel
from lightfast_cloud.errors import LightfastError
from tests.execution.conftest import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    recv_json,
    ws_connect,
)

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/api/v1/chat/weather/weather"


def ui(message_id: str, role: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": role, "parts": [{"type": "text", "text": text}]}


def conversation(turns: int) -> list[dict[str, Any]]:
    """`turns` user/assistant pairs, then a new user message."""
    messages = []
    for index in range(turns):
        messages += [ui(f"u{index}", "user", f"q{index}"), ui(f"a{index}", "assistant", f"r{index}")]
    return messages + [ui(f"u{turns}", "user", "last")]


def test_long_chats_are_bounded_by_what_is_stored_with_a_readable_message(alice: Any, settings: Any) -> None:
    manifest_version(alice.organization)
    target = agent_target_resolve(organization=alice.organization, bundle="weather", agent="weather")
    start = {"organization": alice.organization, "target": target, "created_by": None}
    # 601 messages (the old 500-message refusal) start fine.
    run = chat_run_start(**start, messages=conversation(300), session_id="long", trigger="submit-message")
    assert run.session is not None and run.session.messages.count() == 601
    settings.LIGHTFAST_CHAT_MAX_MESSAGES = 601
    run_cancel(run=run)
    with pytest.raises(LightfastError) as refused:
        chat_run_start(**start, messages=conversation(301), session_id="long", trigger="submit-message")
    assert refused.value.code == "invalid_input"
    assert (
        refused.value.message
        == "This chat is too long to continue (603 messages; the limit is 601). Start a new chat."
    )
    # The client's truncation counts: an edit of an early message fits again.
    run = chat_run_start(**start, messages=conversation(2), session_id="long", trigger="submit-message")
    assert run.session is not None and run.session.messages.count() == 5


def test_tool_logs_reach_end_users_only_when_the_agent_opts_in() -> None:
    opted = {"options": {"providerOptions": {"lightfast": {"streamLogs": True}}}}
    assert AgentManifest.from_spec("a", opted).stream_logs is True
    assert AgentManifest.from_spec("a", {"options": {"providerOptions": {"openai": {}}}}).stream_logs is False
    turn = AssistantTurn(Run(), message_id="m")
    turn.log("call_1", [{"level": "log", "message": "hi"}])
    turn.stream_logs = True
    turn.log("call_2", [{"level": "log", "message": "hi"}])
    first, second = turn.take_pending()
    assert first[1]["private"] is True and "private" not in second[1]


def test_a_resumable_client_that_disconnects_leaves_the_run_running(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    headers = {"Authorization": f"Bearer {alice.keys['all']}"}
    body = {
        "id": "team/resumable",
        "messages": [ui("u1", "user", "hold on #hang")],
        "trigger": "submit-message",
        "resumable": True,
    }
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        with client.stream("POST", CHAT, json=body, headers=headers) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
    start = json.loads(first.removeprefix("data: "))
    run_id = start["messageMetadata"]["runId"]
    time.sleep(1.5)  # a cancel would have landed by now (the AI SDK test sees it within a second)
    run = Run.objects.get(pk=run_id)
    assert run.status == RunStatus.RUNNING
    # The AI SDK's reconnect (chat id with a slash) finds it running; then it is cancelled by id.
    with httpx.Client(base_url=asgi_server.http, timeout=30) as client:
        with client.stream("GET", f"{CHAT}/team/resumable/stream", headers=headers) as response:
            assert response.status_code == 200
            assert next(line for line in response.iter_lines() if line.startswith("data: ")) == first
        assert client.post(f"/api/v1/runs/{run_id}/cancel", headers=headers).status_code == 200
    deadline = time.monotonic() + 10
    while Run.objects.get(pk=run_id).status == RunStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Run.objects.get(pk=run_id).status == RunStatus.CANCELLED
    assert ChatSession.objects.filter(public_id="team/resumable").exists()


def test_websocket_pings_while_quiet_and_takes_chat_ids_with_slashes(
    alice: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    media_root: Any,
    celery_worker: Any,
    redis_server: str,
) -> None:
    settings.LIGHTFAST_STREAM_KEEPALIVE_S = 0.2
    monkeypatch.setenv("LIGHTFAST_STREAM_KEEPALIVE_S", "0.2")
    from tests.execution.live_transport import start_asgi_server

    uploaded_version(alice.organization)
    server = start_asgi_server()
    try:
        with ws_connect(server, "/ws/v1/chat/weather/weather/", key=alice.keys["all"]) as ws:
            assert recv_json(ws, timeout=10) == {"type": "ping"}
            ws.send(json.dumps({"type": "ping"}))
            assert recv_json(ws, timeout=10) == {"type": "pong"}
            ws.send(json.dumps({"type": "message", "text": "hello", "session": "team/ws/chat"}))
            frame = recv_json(ws, timeout=10)
            while frame["type"] == "ping":
                frame = recv_json(ws, timeout=10)
            assert frame["type"] == "run-accepted" and frame["session"] == "team/ws/chat"
    finally:
        server.stop()


def test_two_turns_of_one_chat_at_once_are_serial(alice: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two tabs post the first message of the same chat at once: the second turn waits for the first to
    commit, then follows its own client's list (the first turn's message dropped, its run cancelled),
    instead of both writing into one history (PostgreSQL: the chat's advisory lock; SQLite: the gate)."""
    manifest_version(alice.organization)
    target = agent_target_resolve(organization=alice.organization, bundle="weather", agent="weather")
    first_inside, second_done = threading.Event(), threading.Event()
    create = chat_service.chat_session_create

    def slow_create(**kwargs: Any) -> Any:
        session = create(**kwargs)
        if threading.current_thread().name == "first-tab":
            first_inside.set()
            # Held inside the first turn's transaction: an unserialised second turn finishes meanwhile.
            second_done.wait(2)
        return session

    monkeypatch.setattr(chat_service, "chat_session_create", slow_create)
    runs: dict[str, Run] = {}

    def turn(name: str, text: str) -> None:
        try:
            runs[name] = chat_run_start(
                organization=alice.organization,
                target=target,
                created_by=None,
                messages=[ui(f"id-{name}", "user", text)],
                session_id="team/two-tabs",
                trigger="submit-message",
            )
        finally:
            if name == "second-tab":
                second_done.set()
            connection.close()

    first = threading.Thread(target=turn, args=("first-tab", "from the first tab"), name="first-tab")
    first.start()
    assert first_inside.wait(10)
    second = threading.Thread(target=turn, args=("second-tab", "from the second tab"), name="second-tab")
    second.start()
    first.join(20)
    second.join(20)
    assert set(runs) == {"first-tab", "second-tab"}
    session = ChatSession.objects.get(organization=alice.organization, public_id="team/two-tabs")
    assert [(m.role, m.text()) for m in session.messages.order_by("created_at", "pk")] == [
        ("user", "from the second tab")
    ]
    assert Run.objects.get(pk=runs["first-tab"].pk).status == RunStatus.CANCELLED
    assert Run.objects.get(pk=runs["second-tab"].pk).status == RunStatus.QUEUED
