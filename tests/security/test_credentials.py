"""Credentials that stop holding, key and role escalation, authentication failures, the data directory.

* A revoked, expired or removed credential closes the websockets and SSE streams it opened,
  through the real web server, the RedisPubSub channel layer and the database.
* A key never creates a key that outranks it (scopes, expiry); a member is bound by their role.
* Every authentication entry point (REST, SSE, websocket ticket / subprotocol key / none) counts
  its failures against the client IP, and a blocked IP is refused alike with valid credentials.
* The data directory is 0700 and its files 0600 once settings and the launcher created them.

The "< 2 s" bounds are functional (the issue asks for a close "within a second"; 2 s leaves room
for a loaded machine), not benchmarks.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client
from django.utils import timezone

from execution.events import event_append_many
from execution.services import run_start
from organizations.errors import ExpiryEscalation, ScopeEscalation
from organizations.models import ROLE_SCOPES, ApiKey, Membership, Role
from organizations.ratelimits import POLICY_AUTH_FAILURES
from organizations.services import Actor, apikey_create, membership_remove
from tests.bundles import manifest_version
from tests.execution.live_transport import AsgiServer, closed_with, recv_json, start_asgi_server, ws_connect
from tests.factories import ApiKeyFactory
from tests.services import PROJECT_ROOT, free_port
from tests.test_launcher import get_json

WEATHER_PATH = "/ws/v1/chat/weather/weather/"
CHAT = "/api/v1/chat/weather/weather"
# Far above the test's bounds: a close within them came from the revocation message, not the poll.
PUSH_ONLY_RECHECK_S = "120"


def _asgi_server(monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[AsgiServer]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    server = start_asgi_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def asgi_server_push_only(
    transactional_db: None, redis_server: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AsgiServer]:
    """A server whose connections re-check credentials only when told (or at a key's expiry)."""
    yield from _asgi_server(monkeypatch, LIGHTFAST_CREDENTIAL_RECHECK_S=PUSH_ONLY_RECHECK_S)


@pytest.fixture
def asgi_server_polling(
    transactional_db: None, redis_server: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AsgiServer]:
    """A server whose connections re-check credentials every 0.5 s (the backstop for a lost message)."""
    yield from _asgi_server(monkeypatch, LIGHTFAST_CREDENTIAL_RECHECK_S="0.5")


@pytest.fixture
def asgi_server_strict_ip(
    transactional_db: None, redis_server: str, media_root: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AsgiServer]:
    """A server allowing 3 failed authentications per client IP and minute."""
    yield from _asgi_server(monkeypatch, LIGHTFAST_AUTH_FAILURE_RATE="3/m")


def _answers(ws: Any) -> None:
    """The connection is open and served: a frame gets its answer."""
    ws.send(json.dumps({"type": "resume", "run": "00000000-0000-0000-0000-000000000000"}))
    assert recv_json(ws, timeout=10)["error"]["type"] == "not_found"


def _session_cookie(user: Any) -> str:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}"


def _error_types(frames: list[dict[str, Any]]) -> list[str]:
    return [frame["error"]["type"] for frame in frames if frame.get("type") == "error"]


def _assert_revoked_promptly(ws: Any, *, since: float, after: str) -> None:
    """`ws` gets `credentials_revoked` and close code 4401 within 2 s of `since` (the change)."""
    code, frames = closed_with(ws, timeout=10)
    elapsed = time.monotonic() - since
    assert code == 4401 and _error_types(frames) == ["credentials_revoked"]
    assert elapsed < 2.0, f"closed {elapsed:.2f} s after {after}"


# --- revocation closes what is open ----------------------------------------------------------------


def test_revoking_a_key_closes_its_open_websocket_within_a_second(
    alice: Any, api: Any, asgi_server_push_only: AsgiServer
) -> None:
    manifest_version(alice.organization)
    with (
        ws_connect(asgi_server_push_only, WEATHER_PATH, key=alice.keys["all"]) as revoked_ws,
        ws_connect(asgi_server_push_only, WEATHER_PATH, key=alice.keys["read"]) as other_ws,
    ):
        _answers(revoked_ws)
        _answers(other_ws)
        key_id = alice.api_keys["all"].lookup_id
        response = api.delete(f"/api/v1/api-keys/{key_id}", key=alice.keys["write"])
        assert response.status_code == 200 and response.json()["status"] == "revoked"
        _assert_revoked_promptly(revoked_ws, since=time.monotonic(), after="the revocation")
        # Another key's connection of the same organization is untouched.
        _answers(other_ws)
    # And the revoked key cannot connect again.
    with ws_connect(asgi_server_push_only, WEATHER_PATH, key=alice.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4401 and _error_types(frames) == ["authentication_failed"]


def test_a_key_expiring_closes_its_open_websocket(alice: Any, asgi_server_push_only: AsgiServer) -> None:
    manifest_version(alice.organization)
    expiring = ApiKeyFactory(
        organization=alice.organization,
        scopes=["read"],
        expires_at=timezone.now() + timedelta(seconds=2),
    )
    with ws_connect(asgi_server_push_only, WEATHER_PATH, key=expiring.raw_key) as ws:
        _answers(ws)
        code, frames = closed_with(ws, timeout=10)
    assert code == 4401 and _error_types(frames) == ["credentials_expired"]
    assert timezone.now() >= expiring.expires_at


def test_a_lost_revocation_message_is_caught_by_the_periodic_recheck(
    alice: Any, asgi_server_polling: AsgiServer
) -> None:
    manifest_version(alice.organization)
    with ws_connect(asgi_server_polling, WEATHER_PATH, key=alice.keys["all"]) as ws:
        _answers(ws)
        # A bulk UPDATE sends no signal, so no message: only the re-check can notice.
        ApiKey.objects.filter(pk=alice.api_keys["all"].pk).update(revoked_at=timezone.now())
        code, frames = closed_with(ws, timeout=10)
    assert code == 4401 and _error_types(frames) == ["credentials_revoked"]


def test_removing_a_member_closes_their_session_websocket(
    alice: Any, asgi_server_push_only: AsgiServer
) -> None:
    manifest_version(alice.organization)
    member = alice.users[Role.MEMBER]
    session = {"origin": asgi_server_push_only.http}
    with (
        ws_connect(
            asgi_server_push_only,
            WEATHER_PATH,
            additional_headers={"Cookie": _session_cookie(member)},
            **session,
        ) as member_ws,
        ws_connect(
            asgi_server_push_only,
            WEATHER_PATH,
            additional_headers={"Cookie": _session_cookie(alice.owner)},
            **session,
        ) as owner_ws,
    ):
        _answers(member_ws)
        _answers(owner_ws)
        membership = Membership.objects.get(organization=alice.organization, user=member)
        membership_remove(membership=membership, actor=Actor.for_user(alice.owner))
        _assert_revoked_promptly(member_ws, since=time.monotonic(), after="the removal")
        _answers(owner_ws)


def test_signing_out_closes_the_sessions_websocket(alice: Any, asgi_server_push_only: AsgiServer) -> None:
    manifest_version(alice.organization)
    member = alice.users[Role.MEMBER]
    browser = Client()
    browser.force_login(member)
    other = _session_cookie(member)  # the same user signed in elsewhere: that session stays
    session = {"origin": asgi_server_push_only.http}
    with (
        ws_connect(
            asgi_server_push_only,
            WEATHER_PATH,
            additional_headers={"Cookie": f"sessionid={browser.cookies['sessionid'].value}"},
            **session,
        ) as signed_out_ws,
        ws_connect(
            asgi_server_push_only, WEATHER_PATH, additional_headers={"Cookie": other}, **session
        ) as other_ws,
    ):
        _answers(signed_out_ws)
        _answers(other_ws)
        browser.logout()
        _assert_revoked_promptly(signed_out_ws, since=time.monotonic(), after="signing out")
        _answers(other_ws)


def test_revoking_a_key_ends_its_sse_stream(alice: Any, api: Any, asgi_server_push_only: AsgiServer) -> None:
    version = manifest_version(alice.organization)
    # Queued and never executed (no worker): its stream stays open until something ends it. One
    # event, so the response starts (the server sends the headers with the first body bytes).
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    event_append_many(run, [("start", {"messageId": "m1"})])
    headers = {"Authorization": f"Bearer {alice.keys['read']}"}
    with (
        httpx.Client(base_url=asgi_server_push_only.http, timeout=10) as client,
        client.stream("GET", f"{CHAT}?run={run.pk}&after=0", headers=headers) as response,
    ):
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == f"id: {run.pk}:1"
        revoked = api.delete(f"/api/v1/api-keys/{alice.api_keys['read'].lookup_id}", key=alice.keys["write"])
        assert revoked.status_code == 200
        revoked_at = time.monotonic()
        rest = list(lines)
        elapsed = time.monotonic() - revoked_at
    data = [line.removeprefix("data: ") for line in rest if line.startswith("data: ")]
    assert "[DONE]" not in data
    last = json.loads(data[-1])
    assert last["type"] == "error" and last["errorText"].startswith("credentials_revoked:")
    assert elapsed < 2.0, f"ended {elapsed:.2f} s after the revocation"


# --- a key never outranks its creator --------------------------------------------------------------


def test_a_key_cannot_create_a_key_with_more_scopes(alice: Any, api: Any) -> None:
    read_write = ApiKeyFactory(organization=alice.organization, scopes=["read", "write"])
    before = ApiKey.objects.count()
    response = api.post(
        "/api/v1/api-keys", {"name": "x", "scopes": ["read", "execute"]}, key=read_write.raw_key
    )
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["type"] == "scope_escalation"
    assert error["detail"] == {"allowed": ["read", "write"], "requested": ["read", "execute"]}
    assert ApiKey.objects.count() == before
    within = api.post("/api/v1/api-keys", {"name": "y", "scopes": ["read"]}, key=read_write.raw_key)
    assert within.status_code == 201


def test_a_key_cannot_create_a_key_that_outlives_it(alice: Any, api: Any) -> None:
    parent = ApiKeyFactory(
        organization=alice.organization,
        scopes=["read", "write"],
        expires_at=timezone.now() + timedelta(days=2),
    )
    for body in ({"scopes": ["read"]}, {"scopes": ["read"], "expires_in_days": 3}):
        response = api.post("/api/v1/api-keys", body, key=parent.raw_key)
        assert response.status_code == 403, body
        error = response.json()["error"]
        assert error["type"] == "expiry_escalation"
        assert error["detail"]["max_expires_at"] == parent.expires_at.isoformat()
    shorter = api.post("/api/v1/api-keys", {"scopes": ["read"], "expires_in_days": 1}, key=parent.raw_key)
    assert shorter.status_code == 201
    assert ApiKey.objects.get(lookup_id=shorter.json()["id"]).expires_at <= parent.expires_at
    # A key without expiry may create keys with or without one.
    unbounded = ApiKeyFactory(organization=alice.organization, scopes=["read", "write"])
    assert api.post("/api/v1/api-keys", {"scopes": ["read"]}, key=unbounded.raw_key).status_code == 201
    assert (
        api.post(
            "/api/v1/api-keys", {"scopes": ["read"], "expires_in_days": 30}, key=unbounded.raw_key
        ).status_code
        == 201
    )


def test_a_member_is_bound_by_their_role(alice: Any) -> None:
    viewer = alice.users[Role.VIEWER]
    with pytest.raises(ScopeEscalation):
        apikey_create(
            organization=alice.organization,
            name="x",
            scopes=["read", "write"],
            actor=Actor.for_user(viewer),
            creator_scopes=ROLE_SCOPES[Role.VIEWER],
        )
    api_key, _ = apikey_create(
        organization=alice.organization,
        name="y",
        scopes=["read"],
        actor=Actor.for_user(viewer),
        creator_scopes=ROLE_SCOPES[Role.VIEWER],
    )
    assert api_key.scopes == ["read"]
    # The acting key's own bounds hold even if a caller passes wider creator scopes.
    parent = ApiKeyFactory(
        organization=alice.organization, scopes=["write"], expires_at=timezone.now() + timedelta(hours=1)
    )
    with pytest.raises(ExpiryEscalation):
        apikey_create(
            organization=alice.organization,
            name="z",
            scopes=["write"],
            actor=Actor.for_api_key(parent),
            creator_scopes=ROLE_SCOPES[Role.OWNER],
        )


def test_a_member_session_creates_keys_within_their_role_over_rest(alice: Any, api: Any) -> None:
    admin = alice.users[Role.ADMIN]
    created = api.post("/api/v1/api-keys", {"scopes": ["read", "write", "execute"]}, user=admin)
    assert created.status_code == 201
    # A member's role has no write scope: key management is refused before any key is made.
    refused = api.post("/api/v1/api-keys", {"scopes": ["read"]}, user=alice.users[Role.MEMBER])
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_denied"


# --- one per-IP gate for every authentication entry point -------------------------------------------


def _ws_failures(server: AsgiServer) -> list[tuple[int | None, list[str]]]:
    outcomes = []
    for kwargs in (
        {"subprotocols": ["lightfast.v1", "lightfast.key.lf_live_aaaaaaaaaaaa_not-a-real-secret"]},
        {"path": f"{WEATHER_PATH}?ticket=lf_wst_not-a-real-ticket"},
        {},
    ):
        path = kwargs.pop("path", WEATHER_PATH)
        with ws_connect(server, path, **kwargs) as ws:  # type: ignore[arg-type]
            code, frames = closed_with(ws)
        outcomes.append((code, _error_types(frames)))
    return outcomes


def test_websocket_auth_failures_count_per_ip_and_a_blocked_ip_is_refused_with_valid_keys(
    alice: Any, asgi_server_strict_ip: AsgiServer
) -> None:
    manifest_version(alice.organization)
    assert _ws_failures(asgi_server_strict_ip) == [
        (4401, ["authentication_failed"]),
        (4401, ["authentication_failed"]),
        (4401, ["not_authenticated"]),
    ]
    # Blocked now: a valid key, a wrong key, a valid key naming a missing agent, a ticket: all alike.
    ticket = Client().post("/api/v1/ws-tickets", HTTP_AUTHORIZATION=f"Bearer {alice.keys['read']}")
    assert ticket.status_code == 201  # issued in-process (another "IP"), used from the blocked one
    attempts: list[dict[str, Any]] = [
        {"key": alice.keys["all"]},
        {"key": "lf_live_aaaaaaaaaaaa_not-a-real-secret"},
        {"key": alice.keys["all"], "path": "/ws/v1/chat/weather/nobody/"},
        {"path": f"{WEATHER_PATH}?ticket={ticket.json()['ticket']}"},
    ]
    for attempt in attempts:
        path = attempt.pop("path", WEATHER_PATH)
        with ws_connect(asgi_server_strict_ip, path, **attempt) as ws:
            code, frames = closed_with(ws)
        assert code == 4429, attempt
        [error] = [frame["error"] for frame in frames]
        assert error["type"] == "rate_limited" and error["detail"]["policy"] == POLICY_AUTH_FAILURES
        assert set(error["detail"]) == {"policy", "limit", "window_s", "retry_after_s"}


def test_sse_auth_failures_count_per_ip_and_a_blocked_ip_is_refused_everywhere(
    alice: Any, asgi_server_strict_ip: AsgiServer
) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    resume = f"{CHAT}?run={run.pk}&after=0"
    wrong = {"Authorization": "Bearer lf_live_aaaaaaaaaaaa_not-a-real-secret"}
    with httpx.Client(base_url=asgi_server_strict_ip.http, timeout=10) as client:
        for _ in range(3):
            response = client.get(resume, headers=wrong)
            assert response.status_code == 401
            assert response.headers["RateLimit-Policy"] == '"auth-failures";q=3;w=60'
        valid = {"Authorization": f"Bearer {alice.keys['read']}"}
        refused = [
            client.get(resume, headers=valid),  # SSE with a valid key
            client.get(resume, headers=wrong),  # SSE with a wrong key
            client.get("/api/v1/organization", headers=valid),  # REST
        ]
    for response in refused:
        assert response.status_code == 429
        assert response.json()["error"]["type"] == "rate_limited"
        assert response.json()["error"]["detail"]["policy"] == POLICY_AUTH_FAILURES
    # The websocket is refused from this IP as well: the SSE failures counted against it.
    with ws_connect(asgi_server_strict_ip, WEATHER_PATH, key=alice.keys["all"]) as ws:
        code, _ = closed_with(ws)
    assert code == 4429


def test_a_blocked_ip_cannot_tell_a_suspended_organizations_key_over_rest(
    alice: Any, api: Any, settings: Any
) -> None:
    settings.LIGHTFAST_AUTH_FAILURE_RATE = "1/m"
    assert api.get("/api/v1/organization", key="lf_live_aaaaaaaaaaaa_not-a-real-secret").status_code == 401
    alice.organization.is_active = False
    alice.organization.save()
    response = api.get("/api/v1/organization", key=alice.keys["read"])
    assert response.status_code == 429 and response.json()["error"]["type"] == "rate_limited"


# --- the data directory ------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.mark.timeout(180)
def test_the_data_dir_is_private_after_settings_and_the_launcher_create_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # A directory and a key left readable by an older version are tightened on start.
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    (data_dir / "secret_key").write_text("an-older-secret-key-" + "x" * 40)
    os.chmod(data_dir / "secret_key", 0o644)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
    env.update(LIGHTFAST_DATA_DIR=str(data_dir), PORT=str(port), LIGHTFAST_WORKER_PROCESSES="1")
    launcher = subprocess.Popen(
        [sys.executable, "manage.py", "lightfast", "up", "--no-demo"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.stdout.read() if launcher.stdout else ""
            try:
                status, _ = get_json(f"http://127.0.0.1:{port}/healthz")
            except OSError:  # refused, reset, or timed out while the web processes start
                status = 0
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200
        assert _mode(data_dir) == 0o700
        files = {path.name: _mode(path) for path in data_dir.iterdir() if path.is_file()}
        for name in ("secret_key", "lightfast.sqlite3", "lightfast.sqlite3-wal", "lightfast.sqlite3-shm"):
            assert files.get(name) == 0o600, (name, files)
        assert all(mode & 0o077 == 0 for mode in files.values()), files
        assert _mode(data_dir / "redis.sock") & 0o077 == 0
        for path in data_dir.rglob("*"):
            assert _mode(path) & 0o077 == 0 or path.is_symlink(), (path, oct(_mode(path)))
    finally:
        launcher.send_signal(signal.SIGINT)
        output, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 0, output
