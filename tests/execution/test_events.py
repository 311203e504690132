"""The event log: gap-free seqs under concurrent appenders, reads after a seq, channel-layer notifications,
the SQLite write gate, and the replay-then-tail stream over batched notifications."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import OperationalError, connection, transaction

from execution.events import (
    NOTIFICATION_MAX_EVENTS,
    UnknownEventType,
    event_append,
    event_append_many,
    notification_for,
)
from execution.models import Run, RunEvent
from execution.selectors import run_events_after
from execution.services import run_start
from execution.stream import run_event_stream
from execution.write_gate import after_commit, read_retrying, write_transaction
from lightfast_cloud import sql
from tests.bundles import manifest_version

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


def test_a_flush_larger_than_one_insert_is_stored_whole_in_order(alice: Any) -> None:
    """`sql.insert_rows` splits the rows into INSERTs of at most INSERT_MAX_ROWS: all land, in seq order."""
    run = new_run(alice.organization)
    event_append(run, "start", {"messageId": "m"})
    total = sql.INSERT_MAX_ROWS * 2 + 3
    events = event_append_many(
        run, [("data-log", {"data": {"i": index, "text": "é\u2028"}}) for index in range(total)]
    )
    assert [event.seq for event in events] == list(range(2, total + 2))
    stored = list(
        RunEvent.objects.filter(run=run, type="data-log").order_by("seq").values_list("seq", "payload")
    )
    assert [seq for seq, _ in stored] == list(range(2, total + 2))
    assert [payload["data"] for _, payload in stored] == [
        {"i": index, "text": "é\u2028"} for index in range(total)
    ]
    run.refresh_from_db()
    assert run.last_seq == total + 1


def test_callbacks_after_commit_run_once_the_write_gate_is_open(alice: Any) -> None:
    run = new_run(alice.organization)
    outcomes: list[str] = []

    def other_writer() -> None:
        try:
            with write_transaction():
                Run.objects.filter(pk=run.pk).update(worker="second")
            outcomes.append("second writer committed")
        finally:
            connection.close()

    def callback() -> None:
        # A Celery publish or a notification here must not keep other writers waiting.
        writer = threading.Thread(target=other_writer)
        writer.start()
        writer.join(10)
        outcomes.append("second writer waited" if writer.is_alive() else "callback done")

    with write_transaction():
        Run.objects.filter(pk=run.pk).update(worker="first")
        after_commit(callback)
        assert outcomes == []
    assert outcomes == ["second writer committed", "callback done"]
    run.refresh_from_db()
    assert run.worker == "second"


def test_callbacks_after_commit_do_not_run_when_the_transaction_rolls_back(alice: Any) -> None:
    run = new_run(alice.organization)
    ran: list[int] = []
    with pytest.raises(RuntimeError), write_transaction():
        Run.objects.filter(pk=run.pk).update(worker="rolled back")
        after_commit(lambda: ran.append(1))
        raise RuntimeError("abort")
    assert ran == []
    assert Run.objects.get(pk=run.pk).worker == ""


def test_sqlite_writers_checkpoint_the_wal_in_a_thread_of_their_own(alice: Any) -> None:
    if connection.vendor != "sqlite":
        pytest.skip(reason="PostgreSQL has no WAL file to checkpoint")
    event_append(new_run(alice.organization), "start", {"messageId": "m"})
    assert any(thread.name == "sqlite-checkpointer" and thread.is_alive() for thread in threading.enumerate())


def _stream_in_thread(run: Run) -> tuple[threading.Thread, list[tuple[int, dict[str, Any]]]]:
    """Collect run_event_stream(run) in a thread of its own until the run's terminal event."""
    streamed: list[tuple[int, dict[str, Any]]] = []

    async def consume() -> None:
        async for event in run_event_stream(run.pk, after=0):
            streamed.append((event.seq, event.chunk))

    async def consume_in_time() -> None:
        await asyncio.wait_for(consume(), 15)

    def main() -> None:
        # Through async_to_sync the stream's database reads run in this thread, which then
        # gives its connection back.
        try:
            async_to_sync(consume_in_time)()
        finally:
            connection.close()

    thread = threading.Thread(target=main)
    thread.start()
    return thread, streamed


def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def _store_quietly(run: Run, seq: int, chunk: dict[str, Any]) -> None:
    """An event in the database without a notification (as if the notification were lost)."""
    payload = {key: value for key, value in chunk.items() if key != "type"}
    RunEvent.objects.create(run=run, seq=seq, type=chunk["type"], payload=payload)
    Run.objects.filter(pk=run.pk).update(last_seq=seq)


def _notify(run: Run, first_seq: int, chunks: list[dict[str, Any]]) -> None:
    async_to_sync(get_channel_layer().group_send)(run.group_name, notification_for(run.pk, first_seq, chunks))


SUCCEEDED = {"type": "data-status", "data": {"status": "succeeded"}, "transient": True}


def test_a_stream_forwards_the_new_events_of_a_notification_that_overlaps_what_it_delivered(
    alice: Any,
) -> None:
    run = new_run(alice.organization)
    event_append_many(run, [("start", {"messageId": "m"}), ("text-start", {"id": "t"})])
    thread, streamed = _stream_in_thread(run)
    _wait_until(lambda: len(streamed) == 2)
    from_db = {"type": "text-delta", "id": "t", "delta": "from the database"}
    _store_quietly(run, 3, from_db)
    _store_quietly(run, 4, SUCCEEDED)
    # Seq 2 was delivered already: only 3 and 4 of this notification are new.
    from_notification = {"type": "text-delta", "id": "t", "delta": "from the notification"}
    _notify(run, 2, [{"type": "text-start", "id": "t"}, from_notification, SUCCEEDED])
    thread.join(15)
    assert [seq for seq, _ in streamed] == [1, 2, 3, 4]
    assert streamed[2][1] == from_notification


def test_a_stream_reads_the_database_when_a_notification_would_leave_a_gap(alice: Any) -> None:
    run = new_run(alice.organization)
    event_append_many(run, [("start", {"messageId": "m"})])
    thread, streamed = _stream_in_thread(run)
    _wait_until(lambda: len(streamed) == 1)
    from_db = {"type": "text-start", "id": "t"}
    _store_quietly(run, 2, from_db)
    _store_quietly(run, 3, SUCCEEDED)
    # Starts at 3: seq 2's notification was lost, so the stream must read 2 from the database.
    _notify(run, 3, [SUCCEEDED])
    thread.join(15)
    assert [seq for seq, _ in streamed] == [1, 2, 3]
    assert streamed[1][1] == from_db


def test_a_failed_notification_batch_is_logged_and_later_batches_still_go_out(
    alice: Any, tmp_path: Any, caplog: Any, settings: Any
) -> None:
    from execution.publisher import Publisher

    run = new_run(alice.organization)
    good = settings.CHANNEL_LAYERS
    settings.CHANNEL_LAYERS = {
        "default": {**good["default"], "CONFIG": {"hosts": [{"address": f"unix://{tmp_path}/no-redis.sock"}]}}
    }
    broken = Publisher()
    settings.CHANNEL_LAYERS = good
    working = Publisher()
    listener, received = _listen_to(run, 1)
    failing = "run event notifications (redis) failing"
    with caplog.at_level("WARNING", logger="execution.publisher"):
        broken.publish(run.group_name, notification_for(run.pk, 1, [{"type": "start"}]))
        deadline = time.monotonic() + 10
        while failing not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert failing in caplog.text
    # The publisher's thread survives the failure (redis may come back); the events stay in the DB.
    assert broken._thread.is_alive()
    working.publish(run.group_name, notification_for(run.pk, 2, [{"type": "start-step"}]))
    listener.join(15)
    assert [(m["seq"], m["events"]) for m in received] == [(2, [{"type": "start-step"}])]


def test_a_notification_that_cannot_be_encoded_is_dropped_alone(alice: Any, caplog: Any) -> None:
    """JSON allowed it (an integer beyond 64 bits from a model's tool arguments); msgpack does not."""
    from execution.publisher import publisher

    run = new_run(alice.organization)
    listener, received = _listen_to(run, 2)
    batch = [
        (run.group_name, notification_for(run.pk, 1, [{"type": "start"}])),
        (
            run.group_name,
            notification_for(run.pk, 2, [{"type": "tool-input-available", "input": {"n": 10**30}}]),
        ),
        (run.group_name, notification_for(run.pk, 3, [{"type": "start-step"}])),
    ]
    with caplog.at_level("WARNING", logger="execution.publisher"):
        publisher().send_now(batch)
    listener.join(15)
    assert [m["seq"] for m in received] == [1, 3]
    assert "cannot be encoded" in caplog.text


def test_a_run_read_waits_for_the_database_and_is_tried_again_on_a_new_connection(
    settings: Any, caplog: Any
) -> None:
    """read_retrying: transient failures are waited out (logged once); a lasting one is raised."""
    settings.LIGHTFAST_RUN_STALE_S = 5
    tries: list[int] = []

    def flaky() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise OperationalError("server closed the connection unexpectedly")
        with connection.cursor() as cursor:  # a new connection after the failed tries closed the old
            cursor.execute("SELECT 1")
            return f"read {cursor.fetchone()[0]}"

    assert read_retrying("run r: reading", flaky) == "read 1"
    assert len(tries) == 3
    assert [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()] == [
        "run r: reading: the database is unreachable"
        " (server closed the connection unexpectedly); trying again"
    ]

    settings.LIGHTFAST_RUN_STALE_S = 0.3
    started = time.monotonic()

    def down() -> str:
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError):
        read_retrying("run r: reading", down)
    assert time.monotonic() - started < 2


def test_a_run_read_inside_a_transaction_is_tried_once() -> None:
    tries: list[int] = []

    def down() -> None:
        tries.append(1)
        raise OperationalError("connection refused")

    with pytest.raises(OperationalError), transaction.atomic():
        read_retrying("run r: reading", down)
    assert tries == [1]
