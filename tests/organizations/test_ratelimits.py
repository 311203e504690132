"""Rate limits: exact under concurrency on a real HTTP server, per organization, headers, 429/503, IPs.

The counters are django-ratelimit's (same keys and windows), so `get_usage(increment=False)` reads them.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import override_settings
from django_ratelimit.core import get_usage

from lightfast_cloud.errors import ws_error_frame
from organizations.models import ApiKey, Organization
from organizations.ratelimits import (
    POLICY_API_KEY,
    POLICY_AUTH_FAILURES,
    POLICY_ORGANIZATION,
    RateLimited,
    _counter,
    ratelimit_seconds_to_reset,
    ratelimit_ws_connect,
    ratelimit_ws_frame,
)
from tests.execution.live_transport import AsgiServer, start_asgi_server

ORGANIZATION_URL = "/api/v1/organization"

UNREACHABLE_CACHES = {
    "default": {
        "BACKEND": "lightfast_cloud.cache.ProcessRedisCache",
        "LOCATION": "unix:///nonexistent/lightfast-test/redis.sock",
        "KEY_PREFIX": "lf",
        "OPTIONS": {"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
    }
}


def _set_rate(organization: Organization, rate: str) -> None:
    Organization.objects.filter(pk=organization.pk).update(api_rate=rate)
    organization.api_rate = rate


def _wait_for_fresh_window(
    organization: Organization, *, api_keys: tuple[ApiKey, ...] = (), needed_s: int = 15
) -> None:
    """Fixed windows: start a burst well inside one, so all of it is counted in the same window.

    django-ratelimit staggers each counter's window by its key value, so the organization's and
    each API key's windows end at different seconds: wait until every one of them has room.
    """
    for _ in range(8):
        lefts = [ratelimit_seconds_to_reset(organization=organization)] + [
            _counter(policy=POLICY_API_KEY, value=key.lookup_id, rate=organization.api_rate).reset_s
            for key in api_keys
        ]
        if min(lefts) >= needed_s:
            return
        time.sleep(min(lefts) + 1)
    raise AssertionError(f"no common fresh window of {needed_s} s for the organization and its keys")


def _usage(policy: str, value: str, rate: str) -> int:
    """What django-ratelimit itself reads for this counter (counts nothing)."""
    usage = get_usage(None, group=policy, key=lambda _group, _request: value, rate=rate, increment=False)
    assert usage is not None
    return int(usage["count"])


def _concurrently(target: Any, count: int) -> None:
    """Run `target` in `count` threads at once and wait for them all."""
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _http_get(url: str, key: str) -> tuple[int, Any, dict[str, Any]]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())  # case-insensitive
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


@pytest.fixture
def plain_asgi_server(transactional_db, redis_server):
    """The production ASGI server on the test database (Django's threaded test server would open
    one database connection per concurrent request, past PostgreSQL's connection limit)."""
    server = start_asgi_server()
    try:
        yield server
    finally:
        server.stop()


def test_200_concurrent_requests_against_50_per_minute_admit_exactly_50(
    plain_asgi_server: AsgiServer, alice, bob
):
    _set_rate(alice.organization, "50/m")
    _wait_for_fresh_window(alice.organization, api_keys=(alice.api_keys["read"],))
    url = plain_asgi_server.http + ORGANIZATION_URL
    results: list[tuple[int, Any, dict[str, Any]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(200)

    def call() -> None:
        barrier.wait()
        result = _http_get(url, alice.keys["read"])
        with lock:
            results.append(result)

    _concurrently(call, 200)

    statuses = Counter(status for status, _, _ in results)
    assert statuses == {200: 50, 429: 150}
    ok = [headers for status, headers, _ in results if status == 200]
    limited = [(headers, body) for status, headers, body in results if status == 429]
    # Each admitted request saw a different count: remaining 49, 48, … 0, each exactly once.
    assert sorted(int(headers["X-RateLimit-Remaining"]) for headers in ok) == list(range(50))
    for headers in ok + [headers for headers, _ in limited]:
        assert headers["X-RateLimit-Limit"] == "50"
        assert 0 < int(headers["X-RateLimit-Reset"]) <= 60
        assert '"organization";q=50;w=60' in headers["RateLimit-Policy"]
        assert '"api-key";q=50;w=60' in headers["RateLimit-Policy"]
    resets = {headers["X-RateLimit-Reset"] for headers in ok + [headers for headers, _ in limited]}
    # One window: the values differ only by the seconds that ticked during the burst.
    assert max(map(int, resets)) - min(map(int, resets)) <= 5
    for headers, body in limited:
        assert headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["Retry-After"]) >= 1
        assert headers["RateLimit"].endswith(f"t={headers['X-RateLimit-Reset']}")
        assert ";r=0;" in headers["RateLimit"]
        assert body["error"]["type"] == "rate_limited"
        assert body["error"]["detail"]["limit"] == 50

    # The API key was counted only for the admitted requests; django-ratelimit reads the same counters.
    api_key = ApiKey.objects.get(pk=alice.api_keys["read"].pk)
    assert _usage(POLICY_ORGANIZATION, alice.organization.public_id, "50/m") == 200
    assert _usage(POLICY_API_KEY, api_key.lookup_id, "50/m") == 50

    # Bob's organization is not limited by Alice's.
    status, headers, _ = _http_get(url, bob.keys["read"])
    assert status == 200 and headers["X-RateLimit-Limit"] == "600"
    assert headers["X-RateLimit-Remaining"] == "599"


def test_every_api_response_carries_the_headers(alice, api):
    response = api.get(ORGANIZATION_URL, key=alice.keys["read"])
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "600"
    assert response["X-RateLimit-Remaining"] == "599"
    # Seconds until the window resets: 0 when the request landed in the window's last second.
    assert 0 <= int(response["X-RateLimit-Reset"]) <= 60
    assert response["RateLimit"].startswith('"organization";r=599;t=')
    assert response["RateLimit-Policy"] == '"organization";q=600;w=60, "api-key";q=600;w=60'
    # Errors after tenant resolution count and carry the headers too (a read key cannot write).
    refused = api.post("/api/v1/api-keys", json={"name": "x", "scopes": ["read"]}, key=alice.keys["read"])
    assert refused.status_code == 403
    assert refused["X-RateLimit-Remaining"] == "598"


def test_limit_is_per_organization_and_keys_share_it(alice, bob, api):
    _set_rate(alice.organization, "3/m")
    _wait_for_fresh_window(alice.organization, needed_s=5)
    statuses = [
        api.get(ORGANIZATION_URL, key=alice.keys[name]).status_code for name in ("read", "all", "read")
    ]
    assert statuses == [200, 200, 200]
    # Another key of the same organization: the organization's counter is spent.
    limited = api.get(ORGANIZATION_URL, key=alice.keys["all"])
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limited"
    assert limited["RateLimit"].startswith('"organization";r=0;')
    # Sessions of members count against the same organization.
    assert api.get(ORGANIZATION_URL, user=alice.owner).status_code == 429
    assert api.get(ORGANIZATION_URL, key=bob.keys["read"]).status_code == 200


def test_authentication_failures_are_limited_by_client_ip(alice, api, settings):
    settings.LIGHTFAST_AUTH_FAILURE_RATE = "3/m"
    bad_key = "lf_live_aaaaaaaaaaaa_not-a-real-secret"
    for _ in range(3):
        response = api.get(ORGANIZATION_URL, key=bad_key)
        assert response.status_code == 401
        assert response["RateLimit-Policy"] == '"auth-failures";q=3;w=60'
    # Now even a valid key is refused from this address: guessing cannot continue.
    blocked = api.get(ORGANIZATION_URL, key=alice.keys["read"])
    assert blocked.status_code == 429
    assert blocked.json()["error"]["type"] == "rate_limited"
    assert int(blocked["Retry-After"]) >= 1
    assert blocked["RateLimit-Policy"] == '"auth-failures";q=3;w=60'
    # A wrong key gets the same 429 (not a 401), so a refused client cannot tell valid keys apart.
    wrong = api.get(ORGANIZATION_URL, key=bad_key)
    assert wrong.status_code == 429
    assert wrong.json()["error"]["detail"]["policy"] == POLICY_AUTH_FAILURES
    assert api.get(ORGANIZATION_URL).status_code == 429
    # The refused request with a valid key did not spend the organization's counter.
    assert _usage(POLICY_ORGANIZATION, alice.organization.public_id, "600/m") == 0


def test_forwarded_for_is_trusted_only_for_configured_proxies(alice, api, settings):
    settings.LIGHTFAST_AUTH_FAILURE_RATE = "2/m"
    bad_key = "lf_live_aaaaaaaaaaaa_not-a-real-secret"

    def attempt(forwarded: str, key: str = bad_key) -> int:
        return api.get(ORGANIZATION_URL, key=key, headers={"X-Forwarded-For": forwarded}).status_code

    # No trusted proxy: a client cannot escape its limit by inventing X-Forwarded-For.
    settings.LIGHTFAST_TRUSTED_PROXY_COUNT = 0
    assert [attempt("10.0.0.1"), attempt("10.0.0.2")] == [401, 401]
    assert attempt("10.0.0.3", alice.keys["read"]) == 429
    # One trusted proxy: the address it appended is the client; what the client wrote before it is ignored.
    settings.LIGHTFAST_TRUSTED_PROXY_COUNT = 1
    assert [attempt("1.1.1.1, 203.0.113.7"), attempt("2.2.2.2, 203.0.113.7")] == [401, 401]
    assert attempt("3.3.3.3, 203.0.113.7", alice.keys["read"]) == 429
    assert attempt("203.0.113.8", alice.keys["read"]) == 200
    # Only that one admitted request counted against the organization.
    assert _usage(POLICY_ORGANIZATION, alice.organization.public_id, "600/m") == 1


def test_redis_unreachable_answers_503_not_unlimited(alice, api):
    with override_settings(CACHES=UNREACHABLE_CACHES):
        response = api.get(ORGANIZATION_URL, key=alice.keys["read"])
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "rate_limit_unavailable"
        write = api.post("/api/v1/api-keys", json={"name": "x", "scopes": ["read"]}, key=alice.keys["all"])
        assert write.status_code == 503


def test_redis_unreachable_keeps_a_failed_authentication_a_401(db, api):
    with override_settings(CACHES=UNREACHABLE_CACHES):
        response = api.get(ORGANIZATION_URL, key="lf_live_aaaaaaaaaaaa_not-a-real-secret")
        assert response.status_code == 401
        assert "RateLimit-Policy" not in response


def test_redis_unreachable_can_fail_open_for_reads_only(alice, api, settings):
    settings.LIGHTFAST_RATELIMIT_FAIL_OPEN_READS = True
    with override_settings(CACHES=UNREACHABLE_CACHES):
        read = api.get(ORGANIZATION_URL, key=alice.keys["read"])
        assert read.status_code == 200
        assert "X-RateLimit-Limit" not in read
        write = api.post("/api/v1/api-keys", json={"name": "x", "scopes": ["read"]}, key=alice.keys["all"])
        assert write.status_code == 503
        assert write.json()["error"]["type"] == "rate_limit_unavailable"


def test_websocket_frames_and_connections_are_limited_per_organization(alice, bob):
    _set_rate(alice.organization, "2/m")
    _wait_for_fresh_window(alice.organization, api_keys=(alice.api_keys["execute"],), needed_s=5)
    api_key = alice.api_keys["execute"]
    assert ratelimit_ws_frame(organization=alice.organization, api_key=api_key).remaining == 1
    assert ratelimit_ws_frame(organization=alice.organization, api_key=api_key).remaining == 0
    with pytest.raises(RateLimited) as refused:
        ratelimit_ws_frame(organization=alice.organization, api_key=api_key)
    frame = ws_error_frame(refused.value)
    assert frame["type"] == "error" and frame["error"]["type"] == "rate_limited"
    assert frame["errorText"].startswith("rate_limited: ")
    # Connection attempts have their own counter; Bob is unaffected.
    assert ratelimit_ws_connect(organization=alice.organization, api_key=api_key).remaining == 1
    assert ratelimit_ws_frame(organization=bob.organization).remaining == 599


def test_concurrent_websocket_frames_admit_exactly_the_limit(alice):
    _set_rate(alice.organization, "50/m")
    _wait_for_fresh_window(alice.organization, api_keys=(alice.api_keys["execute"],))
    api_key = alice.api_keys["execute"]
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(100)

    def frame() -> None:
        barrier.wait()
        try:
            ratelimit_ws_frame(organization=alice.organization, api_key=api_key)
            outcome = "sent"
        except RateLimited:
            outcome = "limited"
        with lock:
            outcomes.append(outcome)

    _concurrently(frame, 100)
    assert Counter(outcomes) == {"sent": 50, "limited": 50}


def test_counters_expire_with_their_window(alice, api):
    assert api.get(ORGANIZATION_URL, key=alice.keys["read"]).status_code == 200
    api.get(ORGANIZATION_URL, key="lf_live_aaaaaaaaaaaa_not-a-real-secret")
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    keys = list(client.scan_iter(match=f"{django_settings.CACHES['default']['KEY_PREFIX']}:*rl:*"))
    # Organization, API key and the IP's failure counter; each created with its TTL (window + 5 s fudge).
    assert len(keys) == 3
    assert all(0 < client.ttl(key) <= 65 for key in keys)


def test_counting_survives_a_flushed_script_cache(alice, api):
    client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
    # Both requests in one window (windows are fixed: a boundary between them restarts the count;
    # seen once in CI); the reset is computed from the clock, no request is counted for it.
    reset_s = ratelimit_seconds_to_reset(organization=alice.organization)
    if reset_s < 3:
        time.sleep(reset_s + 0.5)
    assert api.get(ORGANIZATION_URL, key=alice.keys["read"])["X-RateLimit-Remaining"] == "599"
    # A restarted or failed-over Redis has no cached scripts: the counter reloads its script.
    client.script_flush()
    assert api.get(ORGANIZATION_URL, key=alice.keys["read"])["X-RateLimit-Remaining"] == "598"
