"""Browser clients: per-organization allowed origins (CORS) and agent-scoped client tokens."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from execution import client_tokens
from execution.services import run_start
from organizations.models import AuditLog
from organizations.services import Actor, allowed_origin_add, apikey_revoke
from tests.execution.conftest import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    closed_with,
    recv_json,
    ws_connect,
)
from tests.execution.test_sse import sse_events, use_chat_body

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = "/api/v1/chat/weather/weather"
OTHER_CHAT = "/api/v1/chat/other/weather"
APP = "https://app.alice.example"
ACTOR = Actor.system("test")


def mint(api: Any, key: str, bundle: str = "weather", agent: str = "weather", **extra: Any) -> Any:
    return api.post("/api/v1/client-tokens", {"bundle": bundle, "agent": agent, **extra}, key=key)


def test_minting_needs_an_api_key_with_execute_and_an_existing_agent(alice: Any, api: Any) -> None:
    manifest_version(alice.organization)
    response = mint(api, alice.keys["all"], ttl_seconds=120)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["token"].startswith("lf_ct_") and (body["bundle"], body["agent"]) == ("weather", "weather")
    assert mint(api, alice.keys["read"]).status_code == 403
    assert mint(api, alice.keys["all"], agent="nobody").status_code == 404
    assert mint(api, alice.keys["all"], bundle="nothing").status_code == 404
    session = api.post("/api/v1/client-tokens", {"bundle": "weather", "agent": "weather"}, user=alice.owner)
    assert session.status_code == 403 and "API key" in session.json()["error"]["message"]


def test_a_token_is_refused_everywhere_but_its_agents_chat(alice: Any, bob: Any, api: Any) -> None:
    manifest_version(alice.organization)
    manifest_version(alice.organization, slug="other")
    token = mint(api, alice.keys["all"]).json()["token"]
    # Another agent of the same organization: refused before anything runs.
    other = api.post(OTHER_CHAT, use_chat_body("hi"), key=token)
    # An AI SDK body (`trigger`) gets the readable message as text, its type in a header.
    assert other.status_code == 403 and "another agent" in other.content.decode()
    assert other["X-Lightfast-Error"] == "permission_denied"
    assert api.get(f"{OTHER_CHAT}/some-chat/stream", key=token).status_code == 403
    # Every REST endpoint: a client token is not an API key.
    for path in ("/api/v1/runs", "/api/v1/agents", "/api/v1/bundles", "/api/v1/organization"):
        assert api.get(path, key=token).status_code == 401, path
    minted = api.post("/api/v1/client-tokens", {"bundle": "weather", "agent": "weather"}, key=token)
    assert minted.status_code == 401  # a token cannot mint tokens
    assert api.post("/api/v1/ws-tickets", key=token).status_code == 401
    # Its own agent: authentication passes (the chat is unknown, so there is nothing to resume).
    assert api.get(f"{CHAT}/unknown-chat/stream", key=token).status_code in (204, 404)
    # Tampered, or read by another organization's endpoints: refused.
    assert api.get(f"{CHAT}/unknown-chat/stream", key=token[:-2] + "xx").status_code == 401
    manifest_version(bob.organization)
    assert api.post(CHAT, use_chat_body("hi"), key=token).status_code != 401  # Alice's weather only


def test_a_token_expires_and_dies_with_its_key(alice: Any, api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest_version(alice.organization)
    token = mint(api, alice.keys["all"], ttl_seconds=60).json()["token"]
    stream = f"{CHAT}/unknown-chat/stream"
    assert api.get(stream, key=token).status_code in (204, 404)
    now = time.time()
    monkeypatch.setattr(client_tokens.time, "time", lambda: now + 61)
    expired = api.get(stream, key=token)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    monkeypatch.undo()
    apikey_revoke(api_key=alice.api_keys["all"], actor=ACTOR)
    assert api.get(stream, key=token).status_code == 401


def test_a_token_streams_its_agents_chat_from_an_allowed_origin(
    alice: Any, api: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    """What a browser `useChat` does: a client token in Authorization, from the app's origin."""
    uploaded_version(alice.organization)
    allowed_origin_add(organization=alice.organization, origin=APP, actor=ACTOR)
    token = mint(api, alice.keys["all"]).json()["token"]
    headers = {"Authorization": f"Bearer {token}", "Origin": APP}
    with httpx.Client(base_url=asgi_server.http, timeout=60) as client:
        preflight = client.options(
            CHAT,
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == APP
        assert "POST" in preflight.headers["access-control-allow-methods"]
        assert preflight.headers["access-control-allow-headers"] == "authorization, content-type"
        response = client.post(
            CHAT, json=use_chat_body("Hello from the browser", "chat-browser"), headers=headers
        )
        assert response.status_code == 200, response.content
        assert response.headers["access-control-allow-origin"] == APP
        assert "access-control-allow-credentials" not in response.headers
        assert "x-vercel-ai-ui-message-stream" in response.headers["access-control-expose-headers"]
        events = sse_events(response.text)
        assert events[-1] == {"data": "[DONE]"}
        assert json.loads(events[0]["data"])["type"] == "start"
        # The same token as a query parameter (for clients that cannot set headers).
        assert client.get(f"{CHAT}/chat-browser/stream?token={token}").status_code == 204

    # The websocket takes the token where it takes a key: the subprotocol, beside lightfast.v1.
    with ws_connect(asgi_server, "/ws/v1/chat/weather/weather/", key=token, origin=APP) as ws:
        ws.send(json.dumps({"type": "message", "text": "hi"}))
        assert recv_json(ws)["type"] == "run-accepted"
    with ws_connect(
        asgi_server, "/ws/v1/chat/weather/weather/", key=token, origin="https://evil.example"
    ) as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and frames[0]["error"]["type"] == "origin_not_allowed"
    other_version = manifest_version(alice.organization, slug="other")
    # A run of another agent (same organization) is not the token's to cancel or resume.
    other_run = run_start(
        organization=alice.organization, bundle_version=other_version, agent_key="weather", text="x"
    )
    with ws_connect(asgi_server, "/ws/v1/chat/weather/weather/", key=token) as ws:
        ws.send(json.dumps({"type": "cancel", "run": str(other_run.pk)}))
        assert recv_json(ws)["error"]["type"] == "not_found"
        ws.send(json.dumps({"type": "resume", "run": str(other_run.pk), "after": 0}))
        assert recv_json(ws)["error"]["type"] == "not_found"
    with ws_connect(asgi_server, "/ws/v1/chat/other/weather/", key=token) as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and frames[0]["error"]["type"] == "permission_denied"


def test_cors_preflight_and_responses_follow_each_organizations_origins(
    alice: Any, bob: Any, api: Any
) -> None:
    manifest_version(alice.organization)
    allowed_origin_add(organization=alice.organization, origin=APP, actor=ACTOR)
    allowed_origin_add(organization=bob.organization, origin="https://bob.example", actor=ACTOR)
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}

    allowed = api.request("OPTIONS", CHAT, headers={"Origin": APP, **preflight})
    assert allowed.status_code == 204 and allowed["Access-Control-Allow-Origin"] == APP
    assert "Origin" in allowed["Vary"]
    other = api.request("OPTIONS", CHAT, headers={"Origin": "https://evil.example", **preflight})
    assert other.status_code == 403 and not other.has_header("Access-Control-Allow-Origin")
    assert other.json()["error"]["type"] == "origin_not_allowed"
    # REST routes too, and a plain OPTIONS (no preflight) is left to the view.
    assert api.request("OPTIONS", "/api/v1/runs", headers={"Origin": APP, **preflight}).status_code == 204

    token = mint(api, alice.keys["all"]).json()["token"]
    stream = f"{CHAT}/unknown-chat/stream"
    ok = api.get(stream, key=token, headers={"Origin": APP})
    assert ok.status_code in (204, 404) and ok["Access-Control-Allow-Origin"] == APP
    assert ok["Access-Control-Allow-Origin"] != "*"
    # Bob's origin passes a preflight (it is some organization's) but not Alice's requests.
    foreign = api.get(stream, key=token, headers={"Origin": "https://bob.example"})
    assert foreign.status_code == 403 and foreign.json()["error"]["type"] == "origin_not_allowed"
    assert not foreign.has_header("Access-Control-Allow-Origin")
    started = api.post(CHAT, use_chat_body("hi"), key=token, headers={"Origin": "https://bob.example"})
    assert started.status_code == 403 and not alice.organization.runs.exists()
    # An API key from an unknown origin is held to the same rule; no Origin (a server) is not.
    assert (
        api.get("/api/v1/runs", key=alice.keys["all"], headers={"Origin": "https://x.example"}).status_code
        == 403
    )
    assert api.get("/api/v1/runs", key=alice.keys["all"]).status_code == 200
    # An error before the caller is known is readable by the page if the origin is anyone's.
    unauthenticated = api.get("/api/v1/runs", headers={"Origin": APP})
    assert unauthenticated.status_code == 401 and unauthenticated["Access-Control-Allow-Origin"] == APP
    # The platform's own pages (same host) need no CORS.
    assert (
        api.get("/api/v1/runs", key=alice.keys["all"], headers={"Origin": "http://testserver"}).status_code
        == 200
    )


def test_allowed_origins_api_validates_and_audits(alice: Any, bob: Any, api: Any) -> None:
    key = alice.keys["all"]
    created = api.post("/api/v1/allowed-origins", {"origin": "HTTPS://App.Example.com:443/"}, key=key)
    assert created.status_code == 201, created.content
    assert created.json()["origin"] == "https://app.example.com"
    assert (
        api.post("/api/v1/allowed-origins", {"origin": "https://app.example.com"}, key=key).status_code == 200
    )
    assert (
        api.post("/api/v1/allowed-origins", {"origin": "http://localhost:3000"}, key=key).json()["origin"]
        == "http://localhost:3000"
    )
    for bad in (
        "http://app.example.com",
        "https://*.example.com",
        "https://a.example/path",
        "app.example",
        "*",
    ):
        refused = api.post("/api/v1/allowed-origins", {"origin": bad}, key=key)
        assert refused.status_code == 400, bad
    assert (
        api.post(
            "/api/v1/allowed-origins", {"origin": "https://x.example"}, key=alice.keys["read"]
        ).status_code
        == 403
    )
    listed = api.get("/api/v1/allowed-origins", key=key).json()["results"]
    assert [item["origin"] for item in listed] == ["http://localhost:3000", "https://app.example.com"]
    assert api.get("/api/v1/allowed-origins", key=bob.keys["all"]).json()["results"] == []
    origin_id = listed[1]["id"]
    assert api.delete(f"/api/v1/allowed-origins/{origin_id}", key=bob.keys["all"]).status_code == 404
    assert api.delete(f"/api/v1/allowed-origins/{origin_id}", key=key).status_code == 204
    actions = list(
        AuditLog.objects.filter(organization=alice.organization, action__startswith="allowed_origin.")
        .order_by("created_at")
        .values_list("action", flat=True)
    )
    assert actions == ["allowed_origin.added", "allowed_origin.added", "allowed_origin.removed"]
