"""What the run transports (websocket, SSE, REST) share: agent and run lookup per organization, the
gap-free replay-then-tail stream of a run's events, and the watch on a live connection's credentials.

Delivery (see `execution.events`): subscribe to the run's group first, then read the database
after the last seq delivered; the events of a notification that follow the last seq delivered
are forwarded as they are, as long as it leaves no gap; a gap (or a quiet period) triggers a
database read after the last seq. So events arrive exactly once and in order even when pub/sub
drops or reorders notifications.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from agents.models import BundleVersion, VersionStatus
from agents.selectors import bundle_get
from execution.events import NOTIFICATION_TYPE, run_events_after
from execution.models import TERMINAL_STATUSES, ChatSession, Run, run_group_name
from organizations.models import Organization
from organizations.quotas import QuotaExceeded
from organizations.tenancy import CredentialsRevoked, Tenant, tenant_recheck

# Without any notification, the database is read this often anyway (a dropped notification
# of a run's last event would otherwise stall the stream).
CATCH_UP_INTERVAL_S = 1.0
# One database read returns at most this many events; the stream reads again for the rest.
REPLAY_BATCH = 500


# HTTP status of each transport error type (REST and SSE); anything else is a 400.
TRANSPORT_ERROR_STATUS: dict[str, int] = {
    "not_found": 404,
    "permission_denied": 403,
    "quota_exceeded": 403,
    "organization_suspended": 403,
    "rate_limited": 429,
}


class TransportError(Exception):
    """A request a transport must refuse; `code` is the error type clients see (`not_found`, …)."""

    def __init__(self, code: str, message: str, *, detail: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail

    @property
    def http_status(self) -> int:
        """The status REST and SSE answer this refusal with."""
        return TRANSPORT_ERROR_STATUS.get(self.code, 400)


@dataclass(frozen=True)
class AgentTarget:
    """An agent of the organization's active bundle version, addressed as `bundle/agentKey`."""

    version: BundleVersion
    agent_key: str

    @property
    def agent_id(self) -> str:
        """`bundle/agentKey`."""
        return f"{self.version.bundle.slug}/{self.agent_key}"


def agent_target_resolve(*, organization: Organization, bundle: str, agent: str) -> AgentTarget:
    """The organization's runnable agent; another organization's (or no) bundle is `not_found`."""
    found = bundle_get(organization=organization, slug=bundle)
    if found is None:
        raise TransportError("not_found", f"No bundle {bundle!r} in your organization.")
    version = found.active_version
    if version is None:
        latest = found.versions.order_by("-number").first()
        why = f" (version {latest.number} is {latest.status})" if latest is not None else ""
        raise TransportError(
            "invalid_bundle",
            f"Bundle {bundle!r} has no active version to run{why}; activate a ready version.",
            detail={"status": latest.status if latest is not None else None},
        )
    if version.status != VersionStatus.READY:
        raise TransportError(
            "invalid_bundle",
            f"The active version of {bundle!r} is {version.status} and cannot run.",
            detail={"status": version.status},
        )
    agents = (version.manifest or {}).get("agents") or {}
    if agent not in agents:
        raise TransportError(
            "not_found", f"Bundle {bundle!r} has no agent {agent!r}.", detail={"agents": sorted(agents)}
        )
    version.bundle = found
    return AgentTarget(version=version, agent_key=agent)


def agent_target_parse(*, organization: Organization, agent_id: str) -> AgentTarget:
    """`bundle/agentKey` → the organization's agent."""
    bundle, slash, agent = agent_id.partition("/")
    if not slash or not bundle or not agent:
        raise TransportError("invalid_input", "`agent` must be `bundle/agentKey`.")
    return agent_target_resolve(organization=organization, bundle=bundle, agent=agent)


def run_queryset(*, organization: Organization) -> QuerySet[Run]:
    """The organization's runs with what the API shows of them."""
    return Run.objects.filter(organization=organization).select_related("bundle_version__bundle", "session")


def run_get(*, organization: Organization, run_id: str | uuid.UUID) -> Run:
    """The organization's run; anything else (malformed id, another organization's run) is `not_found`."""
    try:
        key = uuid.UUID(str(run_id))
    except ValueError as exc:
        raise TransportError("not_found", "No such run.") from exc
    run = run_queryset(organization=organization).filter(pk=key).first()
    if run is None:
        raise TransportError("not_found", "No such run.")
    return run


def session_get(*, organization: Organization, public_id: str) -> ChatSession | None:
    """The organization's session with this public id, or None."""
    return ChatSession.objects.filter(organization=organization, public_id=public_id).first()


def run_agent_id(run: Run) -> str:
    """`bundle/agentKey` of a run."""
    return f"{run.bundle_version.bundle.slug}/{run.agent_key}"


def is_terminal_chunk(chunk: dict[str, Any]) -> bool:
    """True for the `data-status` event that ends every run."""
    if chunk.get("type") != "data-status":
        return False
    data = chunk.get("data") or {}
    return data.get("status") in TERMINAL_STATUSES


@dataclass(frozen=True)
class StreamedEvent:
    """One event as a transport sends it."""

    seq: int
    chunk: dict[str, Any]

    @property
    def terminal(self) -> bool:
        """True for the last event of a run."""
        return is_terminal_chunk(self.chunk)


@sync_to_async
def _events_after(run_id: uuid.UUID, seq: int) -> tuple[list[StreamedEvent], bool]:
    """Events after `seq` and whether the run had ended before they were read."""
    # Status first: a run's terminal events commit with its terminal status, so if the run had
    # ended before this read, the read below sees every event it will ever have.
    status = Run.objects.filter(pk=run_id).values_list("status", flat=True).first()
    events = run_events_after(run_id, seq, limit=REPLAY_BATCH)
    ended = status is None or (status in TERMINAL_STATUSES and len(events) < REPLAY_BATCH)
    return [StreamedEvent(seq=event.seq, chunk=event.chunk()) for event in events], ended


async def run_event_stream(run_id: uuid.UUID, *, after: int = 0) -> AsyncIterator[StreamedEvent]:
    """Every event of the run with seq > `after`, once each and in order, live until the run ends."""
    notifications = _Notifications(run_group_name(run_id))
    await notifications.subscribe()
    last = after
    try:
        while True:
            events, ended = await _events_after(run_id, last)
            for event in events:
                last = event.seq
                yield event
                if event.terminal:
                    return
            if len(events) >= REPLAY_BATCH:
                continue
            if ended:
                return
            # Wait for notifications; forward the events that follow `last` directly, read the DB
            # when one would leave a gap.
            while True:
                message = await notifications.next(CATCH_UP_INTERVAL_S)
                if message is None or message.get("type") != NOTIFICATION_TYPE:
                    break
                first = int(message.get("seq", 0))
                if first > last + 1:
                    break
                for seq, chunk in enumerate(message.get("events") or [], start=first):
                    if seq <= last:
                        continue  # already delivered from the database
                    event = StreamedEvent(seq=seq, chunk=chunk)
                    last = seq
                    yield event
                    if event.terminal:
                        return
    finally:
        await notifications.close()


class _Notifications:
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
        self.channel = await self.layer.new_channel()
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
        """Leave the group and drop the channel."""
        if self._pending is not None:
            self._pending.cancel()
            try:
                await self._pending
            except asyncio.CancelledError:
                pass  # the receive we cancelled ourselves
            self._pending = None
        if self.layer is not None and self.channel is not None:
            for group in self.groups:
                await self.layer.group_discard(group, self.channel)


# --- credentials of live connections -------------------------------------------------------------


class CredentialWatch:
    """Tells a live connection (websocket, SSE stream) when the credentials it was opened with stop holding.

    Whatever revokes a key, removes a member, changes a role or suspends an organization sends
    `credentials.changed` to the credential's `connections_group` once it commits (see
    `organizations.receivers`); a watch woken by it re-reads the database (`tenant_recheck`),
    so a forged or stale message closes nothing that still holds. A lost message is caught by
    the re-check every LIGHTFAST_CREDENTIAL_RECHECK_S, and a key's expiry by a re-check at
    that moment. The websocket consumer receives the message on its own channel and calls
    `nudge`; an SSE stream has no channel, so `subscribe` opens one.
    """

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self._nudged = asyncio.Event()
        self._notifications: _Notifications | None = None

    async def subscribe(self) -> None:
        """Listen on the tenant's credential groups through a channel of the watch's own."""
        self._notifications = _Notifications(*self.tenant.connection_groups)
        await self._notifications.subscribe()

    def nudge(self) -> None:
        """Re-check now (a `credentials.changed` message arrived)."""
        self._nudged.set()

    async def revoked(self) -> CredentialsRevoked:
        """Wait until the credentials stop holding and say why; checks once at once (join, then read)."""
        while True:
            try:
                await sync_to_async(tenant_recheck)(self.tenant)
            except CredentialsRevoked as exc:
                return exc
            await self._wait(self._delay())

    async def close(self) -> None:
        """Leave the groups `subscribe` joined."""
        if self._notifications is not None:
            await self._notifications.close()
            self._notifications = None

    def _delay(self) -> float:
        interval = float(settings.LIGHTFAST_CREDENTIAL_RECHECK_S)
        expires_at = self.tenant.expires_at
        if expires_at is not None:
            until = (expires_at - timezone.now()).total_seconds()
            if until > 0:
                return min(interval, until + 0.01)
        return interval

    async def _wait(self, timeout: float) -> None:
        if self._notifications is not None:
            await self._notifications.next(timeout)  # any message on a credential group is a nudge
            return
        try:
            await asyncio.wait_for(self._nudged.wait(), timeout)
        except TimeoutError:
            pass  # the periodic re-check
        self._nudged.clear()


# --- starting chat runs from transport requests ------------------------------------------------

MAX_MESSAGES = 500
MAX_TEXT_CHARS = 32_000


def ui_message_parse(message: Any) -> tuple[str, list[dict[str, Any]], str]:
    """(role, text parts, id) of an AI SDK UI message (`parts`) or an older `{role, content}` message."""
    if not isinstance(message, dict):
        raise TransportError("invalid_input", "Each message must be an object.")
    role = message.get("role")
    if role not in ("user", "assistant", "system"):
        raise TransportError("invalid_input", "A message role must be user, assistant or system.")
    public_id = message.get("id")
    public_id = public_id[:64] if isinstance(public_id, str) else ""
    if "parts" in message:
        raw_parts = message["parts"]
        if not isinstance(raw_parts, list):
            raise TransportError("invalid_input", "`parts` must be a list.")
        # Only text reaches the model from the client; tool parts are the server's own record.
        parts = [
            {"type": "text", "text": part["text"]}
            for part in raw_parts
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
    elif isinstance(message.get("content"), str):
        parts = [{"type": "text", "text": message["content"]}]
    else:
        raise TransportError("invalid_input", "A message needs `parts` or a `content` string.")
    if sum(len(part["text"]) for part in parts) > MAX_TEXT_CHARS:
        raise TransportError("invalid_input", f"A message exceeds {MAX_TEXT_CHARS} characters.")
    return role, parts, public_id


def chat_run_start(
    *,
    organization: Organization,
    target: AgentTarget,
    created_by: Any,
    text: str | None = None,
    messages: list[Any] | None = None,
    session_id: str | None = None,
) -> Run:
    """Start a chat run from a text or from a `useChat`-style message list (the last one is the user's turn).

    A session named for the first time imports the earlier messages as its history; a known
    session already holds them, so only the new user message is appended. Every refusal is a
    TransportError, a used-up quota included (`quota_exceeded` naming the quota, its limit and
    reset), so each transport reports it its own way: 403, or an `error` frame.
    """
    from execution.services import RunNotStartable, chat_session_get_or_create, message_create, run_start

    if messages is not None:
        if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
            raise TransportError(
                "invalid_input", f"`messages` must be a list of 1 to {MAX_MESSAGES} messages."
            )
        parsed = [ui_message_parse(message) for message in messages]
        role, parts, _ = parsed[-1]
        if role != "user":
            raise TransportError("invalid_input", "The last message must be the user's.")
        history = parsed[:-1]
    else:
        if not isinstance(text, str) or not text.strip():
            raise TransportError("invalid_input", "Send `input` text or `messages`.")
        if len(text) > MAX_TEXT_CHARS:
            raise TransportError("invalid_input", f"`input` exceeds {MAX_TEXT_CHARS} characters.")
        parts, history = [{"type": "text", "text": text}], []
    if session_id is not None and (not isinstance(session_id, str) or not 0 < len(session_id) <= 200):
        raise TransportError("invalid_input", "`session` must be a string of 1 to 200 characters.")
    with transaction.atomic():
        session: ChatSession | None = None
        if session_id is not None:
            session = session_get(organization=organization, public_id=session_id)
            if session is not None and session.agent != target.agent_id:
                raise TransportError("invalid_input", "That session belongs to another agent.")
            if session is None:
                session = chat_session_get_or_create(
                    organization=organization,
                    agent=target.agent_id,
                    public_id=session_id,
                    created_by=created_by,
                )
                for role, history_parts, public_id in history:
                    message_create(session=session, role=role, parts=history_parts, public_id=public_id)
        try:
            return run_start(
                organization=organization,
                bundle_version=target.version,
                agent_key=target.agent_key,
                session=session,
                parts=parts,
                created_by=created_by,
            )
        except RunNotStartable as exc:
            raise TransportError(exc.code, exc.message, detail=exc.detail) from exc
        except QuotaExceeded as exc:
            raise TransportError(exc.error_type, exc.message, detail=exc.extra_detail) from exc
