"""The event log: gap-free seqs under concurrent appenders, reads after a seq, channel-layer notifications."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection

from execution.events import (
    NOTIFICATION_MAX_EVENTS,
    UnknownEventType,
    event_append,
    event_append_many,
    run_events_after,
)
from execution.models import Run
from execution.services import run_start
from tests.execution.conftest import manifest_version

pytestmark = pytest.mark.django_db(transaction=True)


def new_run(organization: Any) -> Run:
    version = manifest_version(organization)
    return run_start(organization=organization, bundle_version=version, agent_key="weather", text="hi")


def test_seqs_count_from_one_without_gaps(alice: Any) -> None:
    run = new_run(alice.organization)
    first = event_append(run, "start", {"messageId": "m1"})
    batch = event_append_many(run, [("text-start", {"id": "t"}), ("text-delta", {"id": "t", "delta": "a"})])
    assert [first.seq] + [event.seq for event in batch] == [1, 2, 3]
    assert [event.seq for event in run_events_after(run, 1)] == [2, 3]
    assert [event.seq for event in run_events_after(run, 0, limit=2)] == [1, 2]
    assert run_events_after(run, 3) == []
    assert batch[1].chunk() == {"type": "text-delta", "id": "t", "delta": "a"}
    assert batch[1].frame() == {"run": str(run.pk), "seq": 3, "type": "text-delta", "id": "t", "delta": "a"}
    run.refresh_from_db()
    assert run.last_seq == 3


def test_unknown_event_types_are_refused(alice: Any) -> None:
    run = new_run(alice.organization)
    with pytest.raises(UnknownEventType):
        event_append(run, "text-delete", {})
    assert run_events_after(run, 0) == []


def test_concurrent_appenders_get_distinct_consecutive_seqs(alice: Any) -> None:
    run = new_run(alice.organization)
    errors: list[BaseException] = []

    def append_many() -> None:
        try:
            for index in range(25):
                event_append(run.pk, "data-log", {"data": {"i": index}})
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append_many) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [event.seq for event in run_events_after(run, 0)] == list(range(1, 151))


def _listen_to(run: Run, count: int) -> tuple[threading.Thread, list[dict[str, Any]]]:
    """A thread that collects `count` notifications of the run's group (started and subscribed)."""
    layer = get_channel_layer()
    received: list[dict[str, Any]] = []
    ready = threading.Event()

    async def listen() -> None:
        channel = await layer.new_channel()
        await layer.group_add(run.group_name, channel)
        ready.set()
        while len(received) < count:
            received.append(await asyncio.wait_for(layer.receive(channel), 10))

    listener = threading.Thread(target=lambda: asyncio.run(listen()))
    listener.start()
    assert ready.wait(10)
    return listener, received


def test_events_written_together_are_one_notification_after_commit(alice: Any) -> None:
    run = new_run(alice.organization)
    listener, received = _listen_to(run, 2)
    event_append_many(run, [("start", {"messageId": "m"}), ("text-start", {"id": "t"})])
    event_append_many(run, [("text-delta", {"id": "t", "delta": "a"})])
    listener.join(15)
    # One message per transaction, carrying its events in seq order from `seq` on.
    assert [(m["type"], m["run"], m["seq"]) for m in received] == [
        ("run.events", str(run.pk), 1),
        ("run.events", str(run.pk), 3),
    ]
    assert received[0]["events"] == [{"type": "start", "messageId": "m"}, {"type": "text-start", "id": "t"}]
    assert received[1]["events"] == [{"type": "text-delta", "id": "t", "delta": "a"}]


def test_a_large_flush_is_split_into_bounded_notifications(alice: Any) -> None:
    run = new_run(alice.organization)
    total = NOTIFICATION_MAX_EVENTS * 2 + 5
    listener, received = _listen_to(run, 3)
    event_append_many(run, [("data-log", {"data": {"i": index}}) for index in range(total)])
    listener.join(15)
    assert [(m["seq"], len(m["events"])) for m in received] == [
        (1, NOTIFICATION_MAX_EVENTS),
        (NOTIFICATION_MAX_EVENTS + 1, NOTIFICATION_MAX_EVENTS),
        (NOTIFICATION_MAX_EVENTS * 2 + 1, 5),
    ]
    chunks = [chunk for message in received for chunk in message["events"]]
    assert [chunk["data"]["i"] for chunk in chunks] == list(range(total))
