"""Private library APIs the platform relies on, pinned: an upgrade that changes one fails here, by name.

No public API covers these:

* `channels_redis.utils._consistent_hash` and the `<prefix>__group__<group>` channel names:
  `execution/publisher.py` publishes run notifications straight to redis, so it must pick the shard
  and channel the RedisPubSub layer's consumers subscribe to, and serialize as the layer does.
* `RedisPubSubLoopLayer.channels`, `.groups`, `.prefix` and its shards' routing of a group's message:
  `execution/stream.py` (`channel_open`, `channel_drop`) registers a stream's channel in the
  process only, and drops it when the stream ends.
* `django_ratelimit.core._split_rate`, `_get_window`, `_make_cache_key`: `organizations/ratelimits.py`
  counts one request's counters in one Lua round trip, under the keys `get_usage` reads.

* Django's `ASGIHandler.handle` and `run_get_response`: `lightfast_cloud/asgi_handler.py` overrides
  `handle` with a copy that sends `request_started` and closes a built response in the request's
  one thread hop. A Django upgrade that changes either must be looked at and the copy brought along.

Django's `UpdateQuery` is no longer used (execution/events.py goes through `QuerySet.update()`).
"""

from __future__ import annotations

import hashlib
import inspect
import uuid
from importlib.metadata import version

import pytest
from channels_redis.pubsub import RedisPubSubLoopLayer
from channels_redis.utils import _consistent_hash, decode_hosts
from django.core.handlers.asgi import ASGIHandler
from django_ratelimit import ALL
from django_ratelimit.core import _get_window, _make_cache_key, _split_rate, get_usage

from organizations.ratelimits import POLICY_ORGANIZATION, _count, _counter


def _changed(library: str, what: str, user: str) -> str:
    return (
        f"{library} {version(library)} changed {what}, which {user} relies on: "
        f"adapt {user} to this version, or pin {library} below it in pyproject.toml"
    )


def test_channels_redis_shard_and_group_channel_are_the_layers() -> None:
    hosts = ["redis://shard-a:6379", "redis://shard-b:6379", "redis://shard-c:6379"]
    layer = RedisPubSubLoopLayer(hosts=hosts, prefix="lf")  # builds shard objects; connects lazily
    message = _changed(
        "channels-redis", "how a group's channel and shard are chosen", "execution/publisher.py"
    )
    for _ in range(200):
        group = f"run.{uuid.uuid4().hex}"
        channel = f"lf__group__{group}"
        assert layer._get_group_channel_name(group) == channel, message
        assert layer._shards.index(layer._get_shard(channel)) == _consistent_hash(channel, len(hosts)), (
            message
        )
    assert decode_hosts(hosts) == [{"address": host} for host in hosts], message


def test_channels_redis_serializer_round_trips_what_the_publisher_sends() -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    payload = {"type": "run.events", "run": str(uuid.uuid4()), "seq": 3, "events": [{"type": "start"}]}
    message = _changed("channels-redis", "the layer's serialize/deserialize", "execution/publisher.py")
    assert layer.deserialize(layer.serialize(payload)) == payload, message


def test_channels_redis_routes_a_groups_message_to_a_channel_registered_in_the_process() -> None:
    import asyncio

    from execution.stream import channel_drop, channel_open

    message = _changed(
        "channels-redis", "how the pub/sub layer routes a group's message", "execution/stream.py"
    )

    async def route() -> None:
        layer = RedisPubSubLoopLayer(hosts=["redis://unused:6379"], prefix="lf")  # nothing connects
        outer = type("Layer", (), {"_get_layer": lambda self: layer})()
        channel = await channel_open(outer)
        assert channel.startswith("lf") and channel in layer.channels, message
        group_channel = layer._get_group_channel_name("run.x")
        layer.groups[group_channel] = {channel}  # what group_add records (it also subscribes in redis)
        shard = layer._get_shard(group_channel)
        shard._receive_message({"channel": group_channel.encode(), "data": b"payload"})
        assert layer.channels[channel].get_nowait() == b"payload", message
        assert channel not in shard._subscribed_to, message
        channel_drop(outer, channel)  # never subscribed: no redis command, the queue dropped
        assert channel not in layer.channels, message

    asyncio.run(route())


def test_django_ratelimit_private_helpers_keep_their_signatures() -> None:
    message = _changed("django-ratelimit", "a private helper's signature", "organizations/ratelimits.py")
    assert list(inspect.signature(_split_rate).parameters) == ["rate"], message
    assert list(inspect.signature(_get_window).parameters) == ["value", "period"], message
    assert list(inspect.signature(_make_cache_key).parameters) == [
        "group",
        "window",
        "rate",
        "value",
        "methods",
    ], message
    assert _split_rate("600/m") == (600, 60), message
    assert _split_rate("5/2h") == (5, 7200), message


@pytest.mark.django_db
def test_django_ratelimit_reads_the_counters_we_count(redis_server: str) -> None:
    value, rate = f"org-{uuid.uuid4().hex}", "50/h"  # an hour's window: no roll-over during the test
    counter = _counter(policy=POLICY_ORGANIZATION, value=value, rate=rate)
    _count(check=None, counted=[counter])
    _count(check=None, counted=[counter])
    usage = get_usage(
        None, group=POLICY_ORGANIZATION, key=lambda _group, _request: value, rate=rate, method=ALL
    )
    message = _changed("django-ratelimit", "its counter keys or windows", "organizations/ratelimits.py")
    assert usage is not None, message
    assert (usage["count"], usage["limit"]) == (2, 50), message
    assert abs(usage["time_left"] - counter.reset_s) <= 1, message


# sha256 of Django 5.2's `ASGIHandler.handle` and `run_get_response` source, as the copy follows them.
DJANGO_ASGI_HANDLE_SHA256 = "4e38eb185c9bd2186790d906dd2bea098ec1d0b095530d43396d09471fff1e98"


def test_django_asgi_handle_is_the_one_our_handler_copies() -> None:
    source = inspect.getsource(ASGIHandler.handle) + inspect.getsource(ASGIHandler.run_get_response)
    message = _changed("django", "ASGIHandler.handle or run_get_response", "lightfast_cloud/asgi_handler.py")
    assert hashlib.sha256(source.encode()).hexdigest() == DJANGO_ASGI_HANDLE_SHA256, message
