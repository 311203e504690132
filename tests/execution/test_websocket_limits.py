"""Limits on the chat websocket through a real asgi_server: connect and frame rates, quotas, suspension.

Rates are per day in these tests, so a window boundary cannot fall inside a test.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from execution.models import Run
from organizations.models import Organization
from organizations.operations import org_suspend
from organizations.services import Actor
from tests.bundles import manifest_version, uploaded_version
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    closed_with,
    recv_json,
    ws_connect,
)

pytestmark = pytest.mark.django_db(transaction=True)

WEATHER_PATH = "/ws/v1/chat/weather/weather/"


def _limits(organization: Organization, **limits: Any) -> None:
    Organization.objects.filter(pk=organization.pk).update(**limits)
    organization.refresh_from_db()


def _send(ws: Any, frame: dict[str, Any]) -> dict[str, Any]:
    ws.send(json.dumps(frame))
    return recv_json(ws)


def test_connection_attempts_over_the_rate_are_refused(alice: Any, bob: Any, asgi_server: Any) -> None:
    manifest_version(alice.organization)
    manifest_version(bob.organization)
    _limits(alice.organization, api_rate="3/d")
    for _ in range(3):
        with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
            assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4429
    [refusal] = frames
    assert refusal["type"] == "error" and refusal["error"]["type"] == "rate_limited"
    assert refusal["error"]["detail"]["policy"] == "ws-connect" and refusal["error"]["detail"]["limit"] == 3
    # Another organization is not limited by Alice's attempts.
    with ws_connect(asgi_server, WEATHER_PATH, key=bob.keys["all"]) as ws:
        assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"


def test_frames_over_the_rate_get_an_error_frame_and_the_connection_stays_usable(
    alice: Any, asgi_server: Any
) -> None:
    version = manifest_version(alice.organization)
    _limits(alice.organization, api_rate="2/d")
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"
        assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"
        for _ in range(2):
            limited = _send(ws, {"type": "message", "text": "hello"})
            assert limited["type"] == "error" and limited["error"]["type"] == "rate_limited", limited
            assert limited["error"]["detail"]["policy"] == "ws-frame"
            assert limited["errorText"].startswith("rate_limited: ")
        assert not Run.objects.filter(bundle_version=version).exists()  # the limited frames were dropped
        # The operator raises the plan's rate: the same connection goes on.
        _limits(alice.organization, api_rate="100/d")
        accepted = _send(ws, {"type": "message", "text": "hello"})
        assert accepted["type"] == "run-accepted", accepted
    assert Run.objects.filter(bundle_version=version).count() == 1


def test_a_used_up_quota_is_an_error_frame_over_the_websocket_and_403_over_rest_and_sse(
    alice: Any, api: Any, asgi_server: Any
) -> None:
    manifest_version(alice.organization)
    _limits(alice.organization, runs_per_month=0)
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        refusal = _send(ws, {"type": "message", "text": "hello"})
        assert refusal["type"] == "error", refusal
        error = refusal["error"]
        assert error["type"] == "quota_exceeded" and refusal["errorText"].startswith("quota_exceeded: ")
        assert error["detail"]["quota"] == "runs_per_month" and error["detail"]["limit"] == 0
        assert error["detail"]["resets_at"] and "runs_per_month" in error["message"]
        # The connection stays usable.
        assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"

    rest = api.post("/api/v1/runs", {"agent": "weather/weather", "input": "hi"}, key=alice.keys["all"])
    assert rest.status_code == 403, rest.content
    assert rest.json()["error"]["type"] == "quota_exceeded"
    assert rest.json()["error"]["detail"]["quota"] == "runs_per_month"

    body = {
        "id": "chat-q",
        "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}],
    }
    sse = api.post("/api/v1/chat/weather/weather", body, key=alice.keys["all"])
    assert sse.status_code == 403, sse.content
    assert sse.json()["error"]["type"] == "quota_exceeded"
    assert sse.json()["error"]["detail"]["quota"] == "runs_per_month"
    assert not Run.objects.filter(organization=alice.organization).exists()


def test_concurrent_run_quota_is_an_error_frame_naming_the_quota(alice: Any, asgi_server: Any) -> None:
    manifest_version(alice.organization)
    _limits(alice.organization, concurrent_runs=1)
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        # No worker: the first run stays queued (no events yet) and holds the only slot.
        assert _send(ws, {"type": "message", "text": "one"})["type"] == "run-accepted"
        refusal = _send(ws, {"type": "message", "text": "two"})
        assert refusal["error"]["type"] == "quota_exceeded", refusal
        assert refusal["error"]["detail"] == {
            "quota": "concurrent_runs",
            "limit": 1,
            "used": 1,
            "resets_at": None,
        }
        assert _send(ws, {"type": "bogus"})["error"]["type"] == "invalid_frame"


def test_a_suspended_organization_cannot_connect(alice: Any, asgi_server: Any) -> None:
    manifest_version(alice.organization)
    org_suspend(organization=alice.organization, actor=Actor.system("tests"), reason="unpaid")
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        code, frames = closed_with(ws)
    assert code == 4401
    assert frames[0]["error"]["type"] == "organization_suspended"


def test_suspension_cancels_the_running_chat_and_closes_the_open_connection(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    with ws_connect(asgi_server, WEATHER_PATH, key=alice.keys["all"]) as ws:
        accepted = _send(ws, {"type": "message", "text": "hello #hang"})
        run_id = accepted["run"]
        assert recv_json(ws)["type"] == "start"
        org_suspend(organization=alice.organization, actor=Actor.system("tests"), reason="abuse")
        # The open connection is closed at once (credentials.changed), not at its next frame.
        code, after = closed_with(ws)
    assert code == 4403
    assert [frame["error"]["type"] for frame in after if frame.get("type") == "error"] == [
        "organization_suspended"
    ]
    deadline = time.monotonic() + 30
    while Run.objects.get(pk=run_id).status != "cancelled" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert Run.objects.get(pk=run_id).status == "cancelled"
    assert Run.objects.filter(organization=alice.organization).count() == 1


def test_the_sse_chat_route_counts_against_the_api_rate_and_carries_its_headers(alice: Any, api: Any) -> None:
    manifest_version(alice.organization)
    _limits(alice.organization, api_rate="1/d")
    first = api.post("/api/v1/chat/weather/weather", {"id": "x"}, key=alice.keys["all"])
    assert first.status_code == 400 and first.json()["error"]["type"] == "invalid_input"
    assert first["X-RateLimit-Limit"] == "1" and first["X-RateLimit-Remaining"] == "0"
    second = api.post("/api/v1/chat/weather/weather", {"id": "x"}, key=alice.keys["all"])
    assert second.status_code == 429 and second.json()["error"]["type"] == "rate_limited"
    assert int(second["Retry-After"]) >= 1
