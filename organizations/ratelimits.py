"""API rate limits: django-ratelimit counters on the shared Redis cache, and the headers that report them.

Each API request counts against its organization and, once the organization admitted it,
against its API key (both at the organization's plan rate `api_rate`, so today the key
counter reports per-key use; a per-key rate would plug in there); websocket connection attempts and message
frames have their own counters at the same rate. Failed authentications count against
the client IP (`LIGHTFAST_AUTH_FAILURE_RATE`). django-ratelimit's counters are fixed
windows whose key includes the window, created with an atomic add (SET NX) and
incremented with INCR, so N concurrent requests against a limit L admit exactly L.

The tenant base view (organizations/tenancy.py) calls `ratelimit_api_request` right
after resolving the organization, so no tenant API view can skip it, and attaches
`ratelimit_headers` to every response it renders.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import get_usage
from redis.exceptions import RedisError
from rest_framework import status

from lightfast_cloud.api_errors import ApiError
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


class RateLimited(ApiError):
    """Too many requests in the current window; `retry_after` seconds until it resets."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    error_type = "rate_limited"
    code = "rate_limited"
    default_detail = "Too many requests."

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

    def error_frame(self) -> dict[str, Any]:
        """The websocket `error` frame for this refusal."""
        return {
            "type": "error",
            "errorText": f"{self.error_type}: {self.message}",
            "error": {"type": self.error_type, "message": self.message, "detail": self.extra_detail},
        }


class RateLimitUnavailable(ApiError):
    """The rate-limit store (Redis) cannot be reached: refuse rather than let requests through unlimited."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    error_type = "rate_limit_unavailable"
    default_detail = "The rate-limit service is unavailable; retry shortly."


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


def parse_rate(rate: str) -> tuple[int, int]:
    """`600/m` → (600, 60); `100/5m` → (100, 300)."""
    count, _, period = rate.partition("/")
    unit = period[-1:]
    multiplier = int(period[:-1] or 1)
    return int(count), multiplier * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def _count(
    *, request: HttpRequest | None, policy: str, value: str, rate: str, increment: bool
) -> RateLimitDecision:
    try:
        usage = get_usage(
            request, group=policy, key=lambda _group, _request: value, rate=rate, increment=increment
        )
    except (RedisError, OSError) as exc:
        logger.warning("rate-limit store unreachable: %s", exc)
        raise RateLimitUnavailable() from exc
    limit, window_s = parse_rate(rate)
    if usage is None:  # RATELIMIT_ENABLE is off
        return RateLimitDecision(policy=policy, limit=limit, window_s=window_s, count=0, reset_s=window_s)
    if usage["time_left"] < 0:
        # django-ratelimit could not read or write the counter (e.g. the key vanished mid-window).
        raise RateLimitUnavailable()
    return RateLimitDecision(
        policy=policy,
        limit=limit,
        window_s=window_s,
        count=int(usage["count"]),
        reset_s=int(usage["time_left"]),
    )


def _fail_open(method: str) -> bool:
    return bool(settings.LIGHTFAST_RATELIMIT_FAIL_OPEN_READS) and method in SAFE_METHODS


def ratelimit_api_request(
    *, request: HttpRequest, organization: Organization, api_key: ApiKey | None
) -> RateLimitState | None:
    """Count one API request for the organization (and its key); raises RateLimited or RateLimitUnavailable.

    Returns None only when Redis is down and reads may fail open (LIGHTFAST_RATELIMIT_FAIL_OPEN_READS).
    """
    rate = organization.api_rate
    try:
        organization_decision = _count(
            request=request,
            policy=POLICY_ORGANIZATION,
            value=organization.public_id,
            rate=rate,
            increment=True,
        )
        decisions = [organization_decision]
        if api_key is not None:
            # Counted only once the organization admitted the request: with two counters bumped
            # independently, interleaved requests could each be refused by a different counter and
            # fewer than `limit` would pass.
            decisions.append(
                _count(
                    request=request,
                    policy=POLICY_API_KEY,
                    value=api_key.lookup_id,
                    rate=rate,
                    increment=not organization_decision.limited,
                )
            )
    except RateLimitUnavailable:
        if _fail_open(request.method or "GET"):
            return None
        raise
    state = RateLimitState(decisions=tuple(decisions))
    setattr(request, REQUEST_ATTRIBUTE, state)
    if state.binding.limited:
        raise RateLimited(state.binding)
    return state


def ratelimit_seconds_to_reset(*, organization: Organization) -> int:
    """Seconds until the organization's current API window ends (without counting a request)."""
    return _count(
        request=None,
        policy=POLICY_ORGANIZATION,
        value=organization.public_id,
        rate=organization.api_rate,
        increment=False,
    ).reset_s


# --- authentication failures by client IP ---------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """The client address: REMOTE_ADDR, or the address LIGHTFAST_TRUSTED_PROXY_COUNT proxies reported.

    With N trusted proxies, the N-th address from the right of X-Forwarded-For is the one the
    outermost trusted proxy saw; anything further left is client-supplied and not trusted.
    """
    remote = str(request.META.get("REMOTE_ADDR") or "")
    trusted = int(settings.LIGHTFAST_TRUSTED_PROXY_COUNT)
    if trusted <= 0:
        return remote
    forwarded = [part.strip() for part in str(request.META.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < trusted:
        return forwarded[0] if forwarded else remote
    candidate = forwarded[-trusted]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return remote


def ratelimit_auth_failures_check(*, request: HttpRequest) -> None:
    """Refuse (429) a client IP that has failed authentication too often; counts nothing."""
    decision = _auth_failures(request=request, increment=False)
    if decision is not None and decision.count >= decision.limit:
        blocked = RateLimitDecision(
            policy=decision.policy,
            limit=decision.limit,
            window_s=decision.window_s,
            count=decision.count + 1,
            reset_s=decision.reset_s,
        )
        setattr(request, REQUEST_ATTRIBUTE, RateLimitState(decisions=(blocked,)))
        raise RateLimited(blocked)


def ratelimit_auth_failure_record(*, request: HttpRequest) -> None:
    """Count one failed authentication against the client IP; headers then report that policy."""
    decision = _auth_failures(request=request, increment=True)
    if decision is not None:
        setattr(request, REQUEST_ATTRIBUTE, RateLimitState(decisions=(decision,)))


def _auth_failures(*, request: HttpRequest, increment: bool) -> RateLimitDecision | None:
    try:
        return _count(
            request=request,
            policy=POLICY_AUTH_FAILURES,
            value=client_ip(request),
            rate=settings.LIGHTFAST_AUTH_FAILURE_RATE,
            increment=increment,
        )
    except RateLimitUnavailable:
        # The request is refused anyway (401) or will hit the tenant limit, which applies the
        # fail-open/closed policy; do not turn a 401 into a 503.
        return None


# --- websockets ----------------------------------------------------------------------------------------


def ratelimit_ws_connect(*, organization: Organization, api_key: ApiKey | None = None) -> RateLimitDecision:
    """Count a websocket connection attempt; raises RateLimited (refuse it) or RateLimitUnavailable."""
    return _ws(POLICY_WS_CONNECT, organization=organization, api_key=api_key)


def ratelimit_ws_frame(*, organization: Organization, api_key: ApiKey | None = None) -> RateLimitDecision:
    """Count one client message frame; on RateLimited send `exc.error_frame()` and drop the frame."""
    return _ws(POLICY_WS_FRAME, organization=organization, api_key=api_key)


def _ws(policy: str, *, organization: Organization, api_key: ApiKey | None) -> RateLimitDecision:
    value = organization.public_id if api_key is None else f"{organization.public_id}:{api_key.lookup_id}"
    decision = _count(request=None, policy=policy, value=value, rate=organization.api_rate, increment=True)
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
