"""REST API of runs, events, sessions and websocket tickets: scopes, filters, paging, other tenants."""

from __future__ import annotations

from typing import Any

import pytest

from execution.events import event_append_many
from execution.models import RunStatus
from execution.services import run_start
from tests.bundles import manifest_version, uploaded_version

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_and_wait_for_a_run_then_read_it_back(
    alice: Any, api: Any, media_root: Any, celery_worker: Any
) -> None:
    uploaded_version(alice.organization)
    body = {"agent": "weather/weather", "input": 'getWeather {"city": "Rome"}', "session": "s-rest"}
    response = api.post("/api/v1/runs?wait=30", body, key=alice.keys["execute"])
    assert response.status_code == 200, response.json()
    run = response.json()
    assert run["status"] == "succeeded" and run["session"] == "s-rest" and run["usage"]["toolCalls"] == 1
    assert run["streams"] == {
        "events": f"/api/v1/runs/{run['id']}/events",
        "websocket": "/ws/v1/chat/weather/weather/",
        "sse": "/api/v1/chat/weather/weather",
    }
    read = alice.keys["read"]
    events = api.get(f"/api/v1/runs/{run['id']}/events", key=read).json()
    assert [event["seq"] for event in events["events"]] == list(range(1, run["last_seq"] + 1))
    assert events["done"] is True and events["events"][-1]["chunk"]["data"]["status"] == "succeeded"
    page = api.get(f"/api/v1/runs/{run['id']}/events?after=2&limit=3", key=read).json()
    assert [event["seq"] for event in page["events"]] == [3, 4, 5] and page["last_seq"] == 5
    assert page["done"] is False
    assert api.get("/api/v1/sessions/s-rest", key=read).json()["agent"] == "weather/weather"

    # Without wait: 202 at once; messages (AI SDK UI form) continue the same session.
    messages = [{"id": "u2", "role": "user", "parts": [{"type": "text", "text": "thanks"}]}]
    second = api.post(
        "/api/v1/runs",
        {"agent": "weather/weather", "messages": messages, "session": "s-rest"},
        key=alice.keys["execute"],
    )
    assert second.status_code == 202 and second.json()["status"] in ("queued", "running", "succeeded")
    assert second["Location"] == f"/api/v1/runs/{second.json()['id']}"


def test_list_filters_paging_cancel_and_sessions(alice: Any, api: Any) -> None:
    version = manifest_version(alice.organization)
    runs = [
        run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text=f"m{i}")
        for i in range(3)
    ]
    read, execute = alice.keys["read"], alice.keys["execute"]
    listed = api.get("/api/v1/runs?limit=2", key=read).json()
    assert listed["count"] == 3 and len(listed["results"]) == 2 and listed["next"]
    assert listed["results"][0]["id"] == str(runs[-1].pk)  # newest first
    cancelled = api.post(f"/api/v1/runs/{runs[0].pk}/cancel", key=execute)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == RunStatus.CANCELLED
    assert cancelled.json()["error"]["type"] == "cancelled"
    assert [r["id"] for r in api.get("/api/v1/runs?status=cancelled", key=read).json()["results"]] == [
        str(runs[0].pk)
    ]
    assert api.get("/api/v1/runs?agent=weather/weather", key=read).json()["count"] == 3
    assert api.get("/api/v1/runs?agent=weather/other", key=read).json()["count"] == 0
    session_id = runs[1].session.public_id
    assert [r["id"] for r in api.get(f"/api/v1/runs?session={session_id}", key=read).json()["results"]] == [
        str(runs[1].pk)
    ]
    sessions = api.get("/api/v1/sessions", key=read).json()
    assert sessions["count"] == 3
    messages = api.get(f"/api/v1/sessions/{session_id}/messages", key=read).json()["results"]
    assert messages[0]["role"] == "user" and messages[0]["parts"] == [{"type": "text", "text": "m1"}]


def test_scopes_and_bad_input(alice: Any, api: Any) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    read, execute = alice.keys["read"], alice.keys["execute"]
    start = {"agent": "weather/weather", "input": "hi"}
    assert api.post("/api/v1/runs", start, key=read).status_code == 403
    assert api.post(f"/api/v1/runs/{run.pk}/cancel", key=read).status_code == 403
    assert api.get(f"/api/v1/runs/{run.pk}", key=execute).status_code == 403
    assert api.post("/api/v1/runs", start).status_code == 401
    for body, error_type in [
        ({"agent": "weather", "input": "hi"}, "invalid_input"),
        ({"agent": "nope/weather", "input": "hi"}, "not_found"),
        ({"agent": "weather/nobody", "input": "hi"}, "not_found"),
        ({"agent": "weather/weather"}, "invalid_input"),
        ({"agent": "weather/weather", "input": "hi", "messages": []}, "invalid_input"),
        ({"agent": "weather/weather", "input": "   "}, "invalid_input"),
        ({"agent": "weather/weather", "messages": [{"role": "assistant", "content": "x"}]}, "invalid_input"),
        ({"agent": "weather/weather", "input": "hi", "extra": 1}, "invalid_input"),
    ]:
        response = api.post("/api/v1/runs", body, key=execute)
        assert response.status_code in (400, 404), (body, response.json())
        assert response.json()["error"]["type"] == error_type, (body, response.json())
    assert api.post("/api/v1/runs?wait=999", start, key=execute).status_code == 400
    assert api.get(f"/api/v1/runs/{run.pk}/events?after=-1", key=read).status_code == 400
    assert api.get("/api/v1/runs/not-a-uuid", key=read).status_code == 404


def test_another_organization_gets_404_on_every_route(alice: Any, bob: Any, api: Any) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    event_append_many(run, [("start", {"messageId": "m"})])
    session_id = run.session.public_id
    key = bob.keys["all"]
    for method, path in [
        ("GET", f"/api/v1/runs/{run.pk}"),
        ("GET", f"/api/v1/runs/{run.pk}/events"),
        ("POST", f"/api/v1/runs/{run.pk}/cancel"),
        ("GET", f"/api/v1/sessions/{session_id}"),
        ("GET", f"/api/v1/sessions/{session_id}/messages"),
    ]:
        response = api.request(method, path, key=key)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["type"] == "not_found"
    assert api.post("/api/v1/runs", {"agent": "weather/weather", "input": "hi"}, key=key).status_code == 404
    assert api.get("/api/v1/runs", key=key).json()["count"] == 0
    assert api.get("/api/v1/sessions", key=key).json()["count"] == 0
    # Naming Alice's session from Bob's organization creates Bob's own session, never reads Alice's.
    manifest_version(bob.organization)
    mine = api.post(
        "/api/v1/runs", {"agent": "weather/weather", "input": "hi", "session": session_id}, key=key
    )
    assert mine.status_code == 202
    run.refresh_from_db()
    assert run.status == "queued" and run.session.messages.count() == 1


def test_ws_tickets_need_credentials(alice: Any, api: Any) -> None:
    assert api.post("/api/v1/ws-tickets").status_code == 401
    response = api.post("/api/v1/ws-tickets", user=alice.owner)
    assert response.status_code == 201 and response.json()["ticket"].startswith("lf_wst_")


def test_run_get_reads_the_run_and_what_the_api_shows_of_it_in_one_statement(alice: Any, bob: Any) -> None:
    """`run_get` (every run read, cancel and resume): the run whole, its bundle's slug, version number
    and session id set without further queries; the related objects' other fields load when read;
    another organization's run, an unknown id and a malformed one are `not_found`."""
    import uuid

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from execution.models import Run
    from execution.selectors import run_get
    from lightfast_cloud.errors import LightfastError

    version = manifest_version(alice.organization)
    chat = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    tool = run_start(
        organization=alice.organization,
        bundle_version=version,
        agent_key="weather",
        tool="getWeather",
        tool_input={"city": "Oslo"},
    )
    for started in (chat, tool):
        with CaptureQueriesContext(connection) as queries:
            run = run_get(organization=alice.organization, run_id=str(started.pk))
            shown = (
                run.organization.slug,
                run.bundle_version.bundle.slug,
                run.bundle_version.number,
                run.session.public_id if run.session is not None else None,
            )
        assert len(queries) == 1, [query["sql"] for query in queries]
        stored = Run.objects.select_related("bundle_version__bundle", "session").get(pk=started.pk)
        assert shown == (
            alice.organization.slug,
            stored.bundle_version.bundle.slug,
            stored.bundle_version.number,
            stored.session.public_id if stored.session is not None else None,
        )
        for field in Run._meta.concrete_fields:
            assert getattr(run, field.attname) == getattr(stored, field.attname), field.name
        # Deferred, not missing: reading another field of a related object queries for it.
        assert run.bundle_version.sha256 == stored.bundle_version.sha256
    assert tool.session is None and run_get(organization=alice.organization, run_id=tool.pk).session is None
    for organization, run_id in (
        (bob.organization, chat.pk),
        (alice.organization, uuid.uuid4()),
        (alice.organization, "not-a-uuid"),
    ):
        with pytest.raises(LightfastError) as refused:
            run_get(organization=organization, run_id=run_id)
        assert refused.value.code == "not_found"


def test_an_event_page_is_what_its_schema_serializer_makes_of_it(alice: Any, api: Any) -> None:
    """GET …/events builds its body directly (`run_events_page`): byte for byte what
    RunEventsSerializer, the page's schema, renders for the same events, non-ASCII and nesting included."""
    from rest_framework.renderers import JSONRenderer

    from execution.selectors import run_events_after
    from execution.serializers import RunEventsSerializer, run_events_page

    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    event_append_many(
        run,
        [
            ("start", {"messageId": "m"}),
            ("text-delta", {"id": "t", "delta": 'Grüße, 世界 \u2028 "quoted" \\ 🌍'}),
            ("tool-output-available", {"toolCallId": "c", "output": {"a": [1, 2.5, None, True, {"b": "c"}]}}),
        ],
    )
    run.refresh_from_db()
    events = run_events_after(run, 0, limit=2)
    direct = run_events_page(run, events, last_seq=events[-1].seq, done=False)
    body = {
        "run": run.pk,
        "status": run.status,
        "events": [
            {"seq": event.seq, "type": event.type, "created_at": event.created_at, "chunk": event.chunk()}
            for event in events
        ],
        "last_seq": events[-1].seq,
        "done": False,
    }
    renderer = JSONRenderer()
    assert renderer.render(direct) == renderer.render(RunEventsSerializer(body).data)
    response = api.get(f"/api/v1/runs/{run.pk}/events?after=1", key=alice.keys["read"])
    page = response.json()
    assert [event["chunk"]["type"] for event in page["events"]] == ["text-delta", "tool-output-available"]
    assert page["events"][0]["chunk"]["delta"] == 'Grüße, 世界 \u2028 "quoted" \\ 🌍'
    assert page["events"][0]["created_at"].endswith("Z") and page["last_seq"] == 3
