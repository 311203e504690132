"""Publishes channel-layer messages from a daemon thread, one pipelined redis round trip per batch;
only `execution.events` (run events) and `credentials_changed_notify` use it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.sentinel
from channels.layers import get_channel_layer

# Private (no public API picks a layer's shard): pinned by tests/test_library_contracts.py.
from channels_redis.utils import _consistent_hash, decode_hosts
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis import exceptions as redis_exceptions

from lightfast_cloud.outages import Outage

logger = logging.getLogger(__name__)

# During a redis outage the publisher retries after 0.5 s, 1 s, 2 s… at most this long.
PUBLISH_MAX_BACKOFF_S = 5.0


# The channel-layer message telling live connections to re-check their credentials now
# (handler `credentials_changed`); it carries nothing to trust: the connection reads the database.
CREDENTIALS_CHANGED_TYPE = "credentials.changed"


def credentials_changed_notify(groups: Sequence[str]) -> None:
    """Publish `credentials.changed` to each group now, in the caller's thread (one round trip per shard).

    Not queued like run events: a revocation is rare, and a short-lived process (a management
    command) may exit before a queue drains. Best effort all the same: connections also re-check
    on their own every LIGHTFAST_CREDENTIAL_RECHECK_S.
    """
    if not groups:
        return
    try:
        publisher().send_now([(group, {"type": CREDENTIALS_CHANGED_TYPE}) for group in groups])
    except (TimeoutError, OSError, redis_exceptions.RedisError) as exc:
        logger.warning("credential change notification to %d group(s) failed: %s", len(groups), exc)


class Publisher:
    """A daemon thread that publishes notifications in order without blocking the caller.

    The orchestrating thread only queues (no redis wait, no event loop); this thread takes
    everything queued and sends it in one pipelined round trip per shard, with the layer's
    own serializer and group channel names, so a Channels consumer cannot tell it from
    `group_send`.
    """

    QUEUE_SIZE = 100_000
    MAX_BATCH = 500

    def __init__(self) -> None:

        # _layer_shards() refuses any layer but channels_redis's pub/sub one.
        self._shards, self._prefix = _layer_shards()
        self._layer = get_channel_layer()
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="run-event-publisher", daemon=True)
        self._thread.start()

    def publish(self, group: str, message: dict[str, Any]) -> None:
        """Queue one notification; returns at once (drops it, logged, when the queue is full)."""
        if self._queue.qsize() >= self.QUEUE_SIZE:
            self._dropped += 1
            if self._dropped % 1000 == 1:
                logger.warning("run event notifications dropped (queue full): %d so far", self._dropped)
            return
        self._queue.put((group, message))

    def _run(self) -> None:
        # Redis away (refused, reset, timing out while paused): the batch is dropped (the events are
        # committed; consumers catch up from the database), the thread backs off, and the outage is
        # logged once when it starts and once when it ends.
        outage = Outage("run event notifications (redis)", logger=logger, max_delay_s=PUBLISH_MAX_BACKOFF_S)
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 - best effort by design; the thread must outlive any failure
                time.sleep(outage.failed(exc))
                continue
            outage.recovered()

    def send_now(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish `batch` in the caller's thread (the clients' pools are thread-safe); raises on failure."""
        self._send(batch)

    def _send(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        """Publish every message of `batch` that can be encoded (one that cannot is dropped alone, logged)."""
        pipes: dict[int, Any] = {}
        for group, message in batch:
            try:
                payload = self._layer.serialize(message)
            except (TypeError, ValueError, OverflowError) as exc:
                # msgpack refuses what JSON allowed (an integer beyond 64 bits, a lone surrogate):
                # only this notification is lost; its events are in the database all the same.
                logger.warning("dropped a notification to %s that cannot be encoded: %s", group, exc)
                continue
            channel = f"{self._prefix}__group__{group}"
            shard = _consistent_hash(channel, len(self._shards))
            if shard not in pipes:
                pipes[shard] = self._shards[shard].pipeline(transaction=False)
            pipes[shard].publish(channel, payload)
        for pipe in pipes.values():
            pipe.execute()


def _layer_shards() -> tuple[list[redis.Redis], str]:
    """Sync clients for the hosts of the configured RedisPubSubChannelLayer, and its prefix.

    The same host forms as channels_redis (`address` URL, sentinel, connection kwargs), as
    synchronous connection pools.
    """
    layer: dict[str, Any] = settings.CHANNEL_LAYERS["default"]
    config: dict[str, Any] = layer.get("CONFIG", {})
    backend = layer["BACKEND"]
    if backend != "channels_redis.pubsub.RedisPubSubChannelLayer":
        raise ImproperlyConfigured(f"run events publish to a RedisPubSubChannelLayer, not {backend}")
    shards = []
    for host in decode_hosts(config.get("hosts")):
        # A redis that stops answering must not wedge the publisher thread for good.
        host = {"socket_timeout": 5.0, "socket_connect_timeout": 5.0, **host}
        if "address" in host:
            pool = redis.ConnectionPool.from_url(host.pop("address"), **host)
        elif "master_name" in host:
            sentinels, sentinel_kwargs = host.pop("sentinels"), host.pop("sentinel_kwargs", None)
            sentinel = redis.sentinel.Sentinel(sentinels, sentinel_kwargs=sentinel_kwargs)
            pool = redis.sentinel.SentinelConnectionPool(host.pop("master_name"), sentinel, **host)
        else:
            pool = redis.ConnectionPool(**host)
        shards.append(redis.Redis(connection_pool=pool))
    return shards, str(config.get("prefix", "asgi"))


_publisher_instance: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher_instance
    if _publisher_instance is None:
        with _publisher_lock:
            if _publisher_instance is None:
                _publisher_instance = Publisher()
    return _publisher_instance
