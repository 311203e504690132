"""The chat websocket through a real web server, the RedisPubSub layer and a real Celery worker."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from django.core.cache import cache

from execution.events import event_append_many
from execution.models import Run
from execution.services import run_start
from tests.bundles import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    channel_subscriptions,
    closed_with,
    public_seqs,
    recv_json,
    recv_until_end,
    subscriptions_left,
    ws_connect,
)

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_PATH = "/ws/v1/chat/weather/weather/"
TOOL_MESSAGE = 'What is the weather? getWeather {"city": "Paris"}'


def start_over_ws(ws: Any, text: str, session: str | None = None) -> str:
    frame: dict[str, Any] = {"type": "message", "text": text}
    if session is not None:
        frame["session"] = session
    ws.send(json.dumps(frame))
    accepted = recv_json(ws)
    assert accepted["type"] == "run-accepted", accepted
    return str(accepted["run"])


def test_weather_chat_streams_the_tool_call_and_reads_back_over_rest(
    alice: Any, api: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        assert ws.subprotocol == "lightfast.v1"  # never the protocol that carries the key
        run_id = start_over_ws(ws, TOOL_MESSAGE, session="chat-1")
        frames = recv_until_end(ws, run_id)
    # Every event but the tool's log lines (the agent did not opt to stream them), in order.
    assert [frame["seq"] for frame in frames] == public_seqs(run_id)
    kinds = [frame["type"] for frame in frames]
    assert kinds[0] == "start" and "text-delta" in kinds
    tool_input = next(frame for frame in frames if frame["type"] == "tool-input-available")
    assert tool_input["toolName"] == "getWeather" and tool_input["input"] == {"city": "Paris"}
    output = next(frame for frame in frames if frame["type"] == "tool-output-available")
    assert output["toolCallId"] == tool_input["toolCallId"]
    assert output["output"]["city"] == "Paris" and output["output"]["unit"] == "celsius"  # from the sandbox
    assert kinds.index("tool-input-available") < kinds.index("tool-output-available") < kinds.index("finish")
    assert frames[-1]["data"]["status"] == "succeeded"

    run = api.get(f"/api/v1/runs/{run_id}", key=alice.keys["read"]).json()
    assert run["status"] == "succeeded" and run["agent"] == "weather/weather" and run["session"] == "chat-1"
    events = api.get(f"/api/v1/runs/{run_id}/events?after=0", key=alice.keys["read"]).json()
    assert events["done"] is True
    streamed = [e for e in events["events"] if not e["chunk"].get("private")]
    assert [{"run": run_id, "seq": e["seq"], **e["chunk"]} for e in streamed] == frames
    # The log lines are the run's events all the same (API, dashboard).
    assert any(e["chunk"]["type"] == "data-log" for e in events["events"] if e["chunk"].get("private"))
    messages = api.get("/api/v1/sessions/chat-1/messages", key=alice.keys["read"]).json()["results"]
    assert [message["role"] for message in messages] == ["user", "assistant"]


def test_resume_after_a_disconnect_delivers_every_event_once_in_order(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    # The fake provider waits before each answer, so the disconnect falls in the middle of the run.
    text = 'weather #slow=0.7\n#call=getWeather {"city": "Oslo"}'
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        run_id = start_over_ws(ws, text)
        first = [recv_json(ws), recv_json(ws)]
    assert Run.objects.get(pk=run_id).status == "running"
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        ws.send(json.dumps({"type": "resume", "run": run_id, "after": first[-1]["seq"]}))
        rest = recv_until_end(ws, run_id)
    frames = first + rest
    assert [frame["seq"] for frame in frames] == public_seqs(run_id)
    assert "tool-output-available" in [frame["type"] for frame in rest]
    # Replaying a finished run from any seq gives the same events again.
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["read"]) as ws:
        ws.send(json.dumps({"type": "resume", "run": run_id, "after": 3}))
        assert recv_until_end(ws, run_id) == frames[3:]


def test_cancel_over_the_websocket(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        run_id = start_over_ws(ws, "hello #hang")
        recv_json(ws)  # start
        ws.send(json.dumps({"type": "cancel", "run": run_id}))
        frames = recv_until_end(ws, run_id)
    assert frames[-1]["data"]["status"] == "cancelled"


def test_another_organization_gets_not_found_on_every_route_and_frame(
    alice: Any, bob: Any, asgi_server: Any
) -> None:
    version = manifest_version(alice.organization)
    manifest_version(bob.organization)
    alice_run = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="hi"
    )
    with ws_connect(asgi_server, WEATHER_PATH, key=bob.keys["all"]) as ws:
        for frame in (
            {"type": "resume", "run": str(alice_run.pk), "after": 0},
            {"type": "cancel", "run": str(alice_run.pk)},
        ):
            ws.send(json.dumps(frame))
            answer = recv_json(ws)
            assert answer["type"] == "error" and answer["error"]["type"] == "not_found", answer
    alice_run.refresh_from_db()
    assert alice_run.status == "queued"
    # Alice's agent that Bob does not have.
    with ws_connect(asgi_server, "/ws/v1/chat/secret/weather/", key=bob.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4404 and frames[0]["error"]["type"] == "not_found"
    with ws_connect(asgi_server, "/ws/v1/chat/weather/nobody/", key=bob.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4404 and frames[0]["error"]["type"] == "not_found"


def test_invalid_frames_get_error_frames_and_the_connection_stays_usable(
    alice: Any, asgi_server: Any
) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    event_append_many(
        run, [("start", {"messageId": "m"}), ("data-status", {"data": {"status": "cancelled"}})]
    )
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["read"]) as ws:
        bad: list[Any] = [
            "not json",
            "[1, 2]",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "resume", "run": str(run.pk), "after": -1}),
            json.dumps({"type": "resume", "run": str(run.pk), "after": "3"}),
            json.dumps({"type": "resume"}),
            json.dumps({"type": "message", "text": "x" * 70_000}),
            b"\x00binary",
        ]
        for frame in bad:
            ws.send(frame)
            answer = recv_json(ws)
            assert answer["type"] == "error" and answer["error"]["type"] == "invalid_frame", (frame, answer)
        # A read-only key may not start runs.
        ws.send(json.dumps({"type": "message", "text": "hi"}))
        assert recv_json(ws)["error"]["type"] == "permission_denied"
        ws.send(json.dumps({"type": "resume", "run": str(run.pk), "after": 0}))
        frames = recv_until_end(ws, str(run.pk))
    assert [frame["seq"] for frame in frames] == [1, 2]


def test_credentials_tickets_and_origins(alice: Any, api: Any, asgi_server: Any) -> None:
    manifest_version(alice.organization)
    with ws_connect(asgi_server, WEATHER_PATH) as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and frames[0]["error"]["type"] == "not_authenticated"
    with ws_connect(asgi_server, f"{WEATHER_PATH}?key={alice.keys['all']}") as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and "URL" in frames[0]["error"]["message"]
    with ws_connect(
        asgi_server, WEATHER_PATH, subprotocols=["lightfast.v1", "lightfast.key.lf_live_wrong_key"]
    ) as ws:
        code, _ = closed_with(ws)
    assert code == 4401

    response = api.post("/api/v1/ws-tickets", key=alice.keys["read"])
    assert response.status_code == 201
    ticket = response.json()["ticket"]
    with ws_connect(asgi_server, f"{WEATHER_PATH}?ticket={ticket}") as ws:
        ws.send(json.dumps({"type": "message", "text": "hi"}))
        assert recv_json(ws)["error"]["type"] == "permission_denied"  # the ticket keeps the key's scopes
    with ws_connect(asgi_server, f"{WEATHER_PATH}?ticket={ticket}") as ws:  # single use
        code, frames = closed_with(ws)
    assert code == 4401 and frames[0]["error"]["type"] == "authentication_failed"

    expiring = api.post("/api/v1/ws-tickets", key=alice.keys["read"]).json()["ticket"]
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    stored = cache.make_and_validate_key(f"wsticket:{expiring}")
    assert 0 < client.ttl(stored) <= 30
    client.pexpire(stored, 1)
    time.sleep(0.05)
    with ws_connect(asgi_server, f"{WEATHER_PATH}?ticket={expiring}") as ws:
        code, _ = closed_with(ws)
    assert code == 4401

    # A dashboard session works from our own origin only (cookies are sent by any site).
    from django.test import Client

    browser = Client()
    browser.force_login(alice.owner)
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    with ws_connect(
        asgi_server,
        WEATHER_PATH,
        additional_headers={"Cookie": cookie},
        origin=asgi_server.http,  # type: ignore[arg-type]
    ) as ws:
        ws.send(json.dumps({"type": "resume", "run": "not-a-run"}))
        assert recv_json(ws)["error"]["type"] == "not_found"
    with ws_connect(
        asgi_server,
        WEATHER_PATH,
        additional_headers={"Cookie": cookie},
        origin="https://evil.example",  # type: ignore[arg-type]
    ) as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and frames[0]["error"]["type"] == "origin_not_allowed"


def test_a_client_that_stops_reading_is_disconnected(alice: Any, asgi_server: Any, redis_server: str) -> None:
    version = manifest_version(alice.organization)
    before = channel_subscriptions(redis_server)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    big = "x" * 64 * 1024
    total = 200  # 12.8 MB: far more than the kernel buffers and the server's 1 MiB write-buffer cap
    event_append_many(run, [("text-delta", {"id": "t", "delta": big}) for _ in range(total)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", asgi_server.port))
    with ws_connect(
        asgi_server, WEATHER_PATH, key=alice.keys["read"], sock=sock, max_queue=1, compression=None
    ) as ws:
        ws.send(json.dumps({"type": "resume", "run": str(run.pk), "after": 0}))
        time.sleep(12)  # the server's grace for a blocked client is 5 s
        code, frames = closed_with(ws, timeout=30)
    # The close frame queues behind the unread data, so the client may only see the connection drop.
    assert code in (4008, None)
    assert len(frames) < total
    # The stream was cancelled while it waited for room in the queue: its subscription went with it.
    assert subscriptions_left(redis_server, before) == set()


def test_streams_that_ended_leave_no_subscription_in_redis(
    alice: Any, asgi_server: Any, redis_server: str
) -> None:
    version = manifest_version(alice.organization)
    before = channel_subscriptions(redis_server)
    runs = []
    for text in ("a", "b", "c"):
        run = run_start(
            organization=alice.organization, bundle_version=version, agent_key="weather", text=text
        )
        event_append_many(
            run, [("start", {"messageId": "m"}), ("data-status", {"data": {"status": "cancelled"}})]
        )
        runs.append(str(run.pk))
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["read"]) as ws:
        for run_id in runs:
            ws.send(json.dumps({"type": "resume", "run": run_id, "after": 0}))
            assert [frame["seq"] for frame in recv_until_end(ws, run_id)] == [1, 2]
    assert subscriptions_left(redis_server, before) == set()
