"""A run's events for a live connection: replay from the database, then tail the run's channel group,
once each and in order (the delivery contract is in `execution.events`)."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import DatabaseError, connection
from django.db.models import Model

from execution.events import NOTIFICATION_TYPE
from execution.models import (
    TERMINAL_STATUSES,
    Run,
    RunEvent,
    run_group_name,
)
from execution.write_gate import TRANSIENT_DATABASE_ERRORS
from lightfast_cloud import sql

# Without any notification, the database is read this often anyway (a dropped notification
# of a run's last event would otherwise stall the stream).
CATCH_UP_INTERVAL_S = 1.0
# One database read returns at most this many events; the stream reads again for the rest.
REPLAY_BATCH = 500
# A stream waits this long for a database that stopped answering before it gives up.
DATABASE_WAIT_S = 30.0


def is_terminal_chunk(chunk: dict[str, Any]) -> bool:
    """True for the `data-status` event that ends every run."""
    if chunk.get("type") != "data-status":
        return False
    data = chunk.get("data") or {}
    return data.get("status") in TERMINAL_STATUSES


def is_private_chunk(chunk: dict[str, Any]) -> bool:
    """True for events kept for the run's record only (tool log lines the agent did not opt to stream)."""
    return chunk.get("private") is True


@dataclass(frozen=True)
class StreamedEvent:
    """One event as a transport sends it."""

    seq: int
    chunk: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """True for the last event of a run."""
        return is_terminal_chunk(self.chunk)


async def _events_after(run_id: uuid.UUID, seq: int) -> tuple[list[StreamedEvent], bool]:
    """Events after `seq` and whether the run had ended; waits out a database that is briefly away."""
    delay, waited = 0.1, 0.0
    while True:
        try:
            return await _events_after_once(run_id, seq)
        except TRANSIENT_DATABASE_ERRORS:
            # The stream holds its place (`seq`): once the database answers it goes on from there.
            if waited >= DATABASE_WAIT_S:
                raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


@sync_to_async
def _events_after_once(run_id: uuid.UUID, seq: int) -> tuple[list[StreamedEvent], bool]:
    try:
        # Status first: a run's terminal events commit with its terminal status, so if the run had
        # ended before this read, the read below sees every event it will ever have.
        status_sql, events_sql = _read_sql(sql.vendor())
        key = sql.prep_value(Run, "id", run_id)
        found = sql.fetch_one(status_sql, [key])
        rows = sql.fetch_all(events_sql, [key, seq, REPLAY_BATCH])
    except TRANSIENT_DATABASE_ERRORS:
        try:
            connection.close()  # broken: the next read takes a new connection
        except DatabaseError:
            pass
        raise
    status = None if found is None else found[0]
    ended = status is None or (status in TERMINAL_STATUSES and len(rows) < REPLAY_BATCH)
    payload = sql.converter(RunEvent, "payload")
    return [StreamedEvent(seq=row[0], chunk={"type": row[1], **payload(row[2])}) for row in rows], ended


@functools.cache
def _read_sql(vendor: str) -> tuple[str, str]:
    """A stream's two reads as plain SQL (every stream makes them, the ORM would compile them each time)."""
    run, event = sql.table_for(vendor, Run), sql.table_for(vendor, RunEvent)

    def col(model: type[Model], name: str) -> str:
        return sql.column_for(vendor, model, name)

    # Quoted identifiers only; every value is a parameter.
    status = f"SELECT {col(Run, 'status')} FROM {run} WHERE {col(Run, 'id')} = %s"  # noqa: S608
    events = (
        f"SELECT {col(RunEvent, 'seq')}, {col(RunEvent, 'type')}, {col(RunEvent, 'payload')} FROM {event}"  # noqa: S608
        f" WHERE {col(RunEvent, 'run')} = %s AND {col(RunEvent, 'seq')} > %s"
        f" ORDER BY {col(RunEvent, 'seq')} LIMIT %s"
    )
    return status, events


async def run_event_stream(run_id: uuid.UUID, *, after: int = 0) -> AsyncGenerator[StreamedEvent, None]:
    """Every event of the run with seq > `after`, once each and in order, live until the run ends."""
    batches = run_event_batches(run_id, after=after)
    try:
        async for batch in batches:
            for event in batch:
                yield event
    finally:
        await batches.aclose()


async def run_event_batches(
    run_id: uuid.UUID,
    *,
    after: int = 0,
    notifications: Notifications | None = None,
    on_other_message: Callable[[dict[str, Any]], None] | None = None,
    replay: bool = True,
) -> AsyncGenerator[list[StreamedEvent], None]:
    """The events of `run_event_stream`, in the batches they arrive in (one database read, one notification).

    A transport that writes a batch at once (an SSE stream) sends one chunk instead of one per event.
    `notifications`: a subscription the caller opened (and closes) that includes the run's group;
    its messages that are not run events go to `on_other_message` (a credential change, say).
    `replay=False` skips the first database read, for a run whose group that subscription joined
    before the run was created (none of its events can have been published before).
    """
    own = notifications is None
    if notifications is None:
        notifications = Notifications(run_group_name(run_id))
        await notifications.subscribe()
    last = after
    read = replay
    try:
        while True:
            if not read:
                # Nothing stored yet: straight to the notifications (a gap or a quiet second reads).
                read = True
                events: list[StreamedEvent] = []
                ended = False
            else:
                events, ended = await _events_after(run_id, last)
            batch: list[StreamedEvent] = []
            for event in events:
                last = event.seq
                batch.append(event)
                if event.terminal:
                    yield batch
                    return
            if batch:
                yield batch
            if len(events) >= REPLAY_BATCH:
                continue
            if ended:
                return
            # Wait for notifications; forward the events that follow `last` directly, read the DB
            # when one would leave a gap.
            while True:
                message = await notifications.next(CATCH_UP_INTERVAL_S)
                if message is None:
                    break
                if message.get("type") != NOTIFICATION_TYPE:
                    if on_other_message is None:
                        break
                    on_other_message(message)
                    continue
                first = int(message.get("seq", 0))
                if first > last + 1:
                    break
                batch = []
                for seq, chunk in enumerate(message.get("events") or [], start=first):
                    if seq <= last:
                        continue  # already delivered from the database
                    event = StreamedEvent(seq=seq, chunk=chunk)
                    last = seq
                    batch.append(event)
                    if event.terminal:
                        yield batch
                        return
                if batch:
                    yield batch
    finally:
        if own:
            await notifications.close()


# Closes still running after their caller was cancelled (Notifications.close).
_closing: set[asyncio.Future[None]] = set()


class Notifications:
    """A private channel in some groups (a run's, a credential's) with one receive always pending.

    `RedisPubSubChannelLayer.receive` unsubscribes its channel when cancelled, so a timeout must
    never cancel it: a single receive task is kept and waited on with `asyncio.wait`.
    """

    def __init__(self, *groups: str) -> None:
        self.groups = groups
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self._pending: asyncio.Future[Any] | None = None

    async def subscribe(self) -> None:
        """Join the groups (before the first database read, so nothing falls between the two)."""
        if self.layer is None:
            return
        self.channel = await channel_open(self.layer)
        for group in self.groups:
            await self.layer.group_add(group, self.channel)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next notification, or None after `timeout` seconds."""
        if self.layer is None or self.channel is None:
            await asyncio.sleep(timeout)
            return None
        if self._pending is None:
            self._pending = asyncio.ensure_future(self.layer.receive(self.channel))
        done, _ = await asyncio.wait({self._pending}, timeout=timeout)
        if not done:
            return None
        pending, self._pending = self._pending, None
        message: dict[str, Any] = pending.result()
        return message

    async def close(self) -> None:
        """Leave the groups and drop the channel, to the end even when the caller is cancelled meanwhile.

        A websocket client that leaves just as its run ends cancels the stream while it closes
        this; an interrupted close would leave the subscriptions behind.
        """
        closing = asyncio.ensure_future(self._close())
        _closing.add(closing)  # a strong reference: the loop keeps only weak ones to its tasks
        closing.add_done_callback(_closing.discard)
        await asyncio.shield(closing)

    async def _close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            try:
                await self._pending
            except asyncio.CancelledError:
                pass  # the receive we cancelled ourselves
            self._pending = None
        if self.layer is not None and self.channel is not None:
            channel, self.channel = self.channel, None
            try:
                for group in self.groups:
                    await self.layer.group_discard(group, channel)
            finally:
                channel_drop(self.layer, channel)  # also when redis refused a group's discard


async def channel_open(layer: Any) -> str:
    """A private channel of the process for group messages only: nothing is ever sent to it directly.

    channels_redis's pub/sub layer delivers a group's message to every channel of the process in
    that group (`RedisPubSubLoopLayer.groups`), from the group's one redis subscription; its
    `new_channel` also subscribes the channel's own name in redis, for direct sends. A stream takes
    no direct sends, so its channel is only registered in the process: one SUBSCRIBE and one
    UNSUBSCRIBE fewer per stream (and the two confirmations the layer's reader would parse).
    """
    get_loop_layer = getattr(layer, "_get_layer", None)
    if get_loop_layer is None:
        channel: str = await layer.new_channel()  # another layer (none of this project's settings)
        return channel
    loop_layer = get_loop_layer()
    channel = f"{loop_layer.prefix}stream.{uuid.uuid4().hex}"
    loop_layer.channels[channel] = asyncio.Queue()
    return channel


def channel_drop(layer: Any, channel: str) -> None:
    """Drop the queue of a `channel_open` channel: never subscribed in redis, it has nothing to unsubscribe.

    The layer has no call for it: it drops a channel only when a `receive` on it is cancelled
    (django/channels_redis#276), so the queue of every stream that read its run to the end would
    stay in the web process for its life.
    """
    get_loop_layer = getattr(layer, "_get_layer", None)
    if get_loop_layer is None:
        return  # another layer (none of this project's settings): nothing of ours to drop
    get_loop_layer().channels.pop(channel, None)
