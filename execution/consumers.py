"""The chat websocket `/ws/v1/chat/{bundle}/{agent}/`: start, cancel and resume runs, stream their events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from execution.client_tokens import client_token_run_get
from execution.credential_watch import CredentialWatch
from execution.sandbox.values import clean_value
from execution.selectors import AgentTarget, agent_target_resolve
from execution.services import chat_run_start, run_cancel
from execution.services.chat_tools import chat_run_continue, tool_responses_from_frame
from execution.stream import is_private_chunk, run_event_stream
from execution.write_gate import TRANSIENT_DATABASE_ERRORS
from execution.ws_auth import accepted_subprotocol, ws_tenant_resolve
from lightfast_cloud.errors import LightfastError, ws_error_frame
from organizations.models import Scope
from organizations.ratelimits import (
    client_ip_of_scope,
    ratelimit_ws_connect,
    ratelimit_ws_frame,
)
from organizations.tenancy import CredentialsRevoked, Tenant, tenant_recheck

logger = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024
# Sent when nothing else was for LIGHTFAST_STREAM_KEEPALIVE_S seconds (keeps idle-timeout proxies open).
PING_FRAME = json.dumps({"type": "ping"})
SEND_QUEUE_FRAMES = 256
MAX_BUFFERED_BYTES = 1024 * 1024
SLOW_CLIENT_GRACE_S = 5.0
MAX_STREAMS_PER_CONNECTION = 16

# Not an error a service raises: the server gives up on a client that does not read.
CLOSE_SLOW_CLIENT = 4008

TRANSPORT_SCOPE_KEY = "lightfast.transport"


def database_unavailable(exc: Exception) -> LightfastError:
    """The client's answer when the database refused or dropped the connection (logged here)."""
    logger.warning("websocket: the database is unreachable: %s", exc)
    return LightfastError(
        "The database is unreachable at the moment; try again shortly.", code="service_unavailable"
    )


def _frame_run(text_data: str | None) -> str | None:
    """The `run` a client frame names, if it is JSON naming one (for the error of a refused frame)."""
    try:
        frame = json.loads(text_data or "")
    except ValueError:
        return None
    run = frame.get("run") if isinstance(frame, dict) else None
    return run[:64] if isinstance(run, str) else None


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


class TransportBacklogMiddleware:
    """Puts the server's socket transport in the scope so the consumer can see unsent bytes.

    Under daphne ASGI `send` never blocks (Twisted buffers whatever is written): the only way to
    notice a client that stopped reading is the transport's write buffer. Under uvicorn `send`
    waits while the transport's buffer is over its high-water mark, so the consumer bounds each
    send in time instead; either way a client that does not read is cut off (see `_write_loop`).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if isinstance(send, partial) and send.args:
            protocol = send.args[0]  # daphne: partial(server.handle_reply, protocol)
        else:
            protocol = getattr(send, "__self__", None)  # uvicorn: the protocol's bound `send`
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            scope = dict(scope, **{TRANSPORT_SCOPE_KEY: transport})
        await self.app(scope, receive, send)


def transport_backlog_bytes(transport: Any) -> int:
    """Bytes written to the server's transport but not yet sent to the peer (0 when unknown)."""
    if transport is None:
        return 0
    buffer_size = getattr(transport, "get_write_buffer_size", None)
    if callable(buffer_size):  # an asyncio transport (uvicorn)
        return int(buffer_size())
    # A Twisted TCP transport (daphne).
    buffered = getattr(transport, "dataBuffer", b"")
    offset = int(getattr(transport, "offset", 0) or 0)
    pending = int(getattr(transport, "_tempDataLen", 0) or 0)
    return max(0, len(buffered) - offset) + pending


def transport_abort(transport: Any) -> None:
    """Drop the connection now, discarding unsent bytes (asyncio `abort`, Twisted `abortConnection`)."""
    for name in ("abort", "abortConnection"):
        method = getattr(transport, name, None)
        if callable(method):
            method()
            return


def _connect_admit_sync(scope: dict[str, Any]) -> tuple[Tenant, AgentTarget]:
    """Credentials, then the IP's and organization's limits, then the agent: one trip to a thread.

    A blocked IP gets the same 4429 whatever it presents (see ws_tenant_resolve).
    """
    route = scope["url_route"]["kwargs"]
    ip = client_ip_of_scope(scope)
    tenant = ws_tenant_resolve(scope, ip=ip)
    ratelimit_ws_connect(organization=tenant.organization, api_key=tenant.api_key, ip=ip)
    target = agent_target_resolve(
        organization=tenant.organization, bundle=route["bundle"], agent=route["agent"]
    )
    return tenant, target


# Connects are independent of each other and of the consumers' other synchronous work, so they run
# in the shared thread pool rather than queueing for the one thread-sensitive thread (a burst of
# connects would otherwise wait on each other's database and redis round trips).
_connect_admit = database_sync_to_async(_connect_admit_sync, thread_sensitive=False)


def _admit_frame(tenant: Tenant) -> None:
    """Re-check the credentials (raises CredentialsRevoked) and count one frame (raises RateLimited)."""
    organization = tenant_recheck(tenant)
    ratelimit_ws_frame(organization=organization, api_key=tenant.api_key)


class ChatConsumer(AsyncWebsocketConsumer):
    """One client connection to one agent; may stream several runs at once."""

    tenant: Tenant
    target: AgentTarget

    async def connect(self) -> None:
        """Authenticate, resolve the agent, accept; refusals are explained in a frame, then closed."""
        # Text frames to send; an int is a close code: close once everything before it was sent.
        self.queue: asyncio.Queue[str | int | None] = asyncio.Queue(SEND_QUEUE_FRAMES)
        self.streams: dict[str, asyncio.Task[None]] = {}
        self.writer: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[None] | None = None
        self.groups: list[str] = []
        self.closing = False
        subprotocol = accepted_subprotocol(self.scope)
        try:
            self.tenant, self.target = await _connect_admit(self.scope)
        except TRANSIENT_DATABASE_ERRORS as exc:
            # The database refused or dropped the connection: nothing is wrong with the client's.
            unavailable = database_unavailable(exc)
            await self._refuse(subprotocol, ws_error_frame(unavailable), unavailable.ws_close)
            return
        except LightfastError as exc:
            # Refused (credentials, the IP's or organization's limits, the agent): the frame says
            # why, the close code comes from the error table.
            await self._refuse(subprotocol, ws_error_frame(exc), exc.ws_close)
            return
        await self.accept(subprotocol)
        self.writer = asyncio.ensure_future(self._write_loop())
        # Join the credential groups, then check once (CredentialWatch.revoked starts with a read), so a
        # revocation that committed after the credentials were resolved is not missed.
        self.watch = CredentialWatch(self.tenant)
        if self.channel_layer is not None:
            for group in self.tenant.connection_groups:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups.append(group)
        self.watcher = asyncio.ensure_future(self._watch_credentials())

    async def credentials_changed(self, message: dict[str, Any]) -> None:
        """Channel-layer handler of `credentials.changed`: re-check the credentials now."""
        watch: CredentialWatch | None = getattr(self, "watch", None)
        if watch is not None:
            watch.nudge()

    async def _watch_credentials(self) -> None:
        revoked = await self.watch.revoked()
        if self.closing:
            return
        logger.info("closing a websocket: %s", revoked.code)
        await self._close_after(ws_error_frame(revoked), revoked.ws_close)

    async def _refuse(self, subprotocol: str | None, frame: dict[str, Any], code: int) -> None:
        self.closing = True
        await self.accept(subprotocol)
        await self.send(text_data=json.dumps(frame))
        await self.close(code)

    async def disconnect(self, code: int) -> None:
        """Stop every stream and the writer."""
        self.closing = True
        tasks = list(getattr(self, "streams", {}).values())
        for name in ("writer", "watcher"):
            task = getattr(self, name, None)
            if task is not None:
                tasks.append(task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass  # cancelled just above
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    # --- client frames ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Parse one client frame and act on it; a bad frame gets an `error` frame."""
        if self.closing:
            return
        try:
            await sync_to_async(_admit_frame)(self.tenant)
        except CredentialsRevoked as exc:
            await self._close_after(ws_error_frame(exc), exc.ws_close)
            return
        except LightfastError as exc:
            # Over the frame rate (or the rate-limit store is away): this frame is dropped, and the
            # error names its run when it has one, so the client knows which to send again.
            await self._enqueue(ws_error_frame(exc, run=_frame_run(text_data)))
            return
        except TRANSIENT_DATABASE_ERRORS as exc:
            await self._enqueue(ws_error_frame(database_unavailable(exc), run=_frame_run(text_data)))
            return
        try:
            frame = self._parse(text_data, bytes_data)
            kind = frame.get("type")
            if kind == "message":
                await self._on_message(frame)
            elif kind == "cancel":
                await self._on_cancel(frame)
            elif kind == "resume":
                await self._on_resume(frame)
            elif kind == "continue":
                await self._on_continue(frame)
            elif kind == "ping":
                await self._enqueue({"type": "pong"})
            else:
                raise LightfastError(
                    code="invalid_frame",
                    message="Unknown frame type; expected message, continue, cancel, resume or ping.",
                    detail={"type": kind if isinstance(kind, str) else None},
                )
        except LightfastError as exc:
            await self._enqueue(ws_error_frame(exc))
        except TRANSIENT_DATABASE_ERRORS as exc:
            await self._enqueue(ws_error_frame(database_unavailable(exc)))  # the frame was not acted on

    def _parse(self, text_data: str | None, bytes_data: bytes | None) -> dict[str, Any]:
        if text_data is None:
            raise LightfastError(code="invalid_frame", message="Frames are JSON text, not binary.")
        if len(text_data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
            raise LightfastError(
                code="invalid_frame",
                message=f"The frame exceeds {MAX_FRAME_BYTES} bytes.",
                detail={"limit_bytes": MAX_FRAME_BYTES},
            )
        try:
            frame = json.loads(text_data)
        except ValueError as exc:
            raise LightfastError(code="invalid_frame", message="The frame is not valid JSON.") from exc
        if not isinstance(frame, dict):
            raise LightfastError(code="invalid_frame", message="The frame must be a JSON object.")
        # NUL and unpaired surrogates become U+FFFD, the platform's rule for text a database cannot store.
        cleaned: dict[str, Any] = clean_value(frame)
        return cleaned

    def _require(self, scope: str) -> None:
        if not self.tenant.has_scope(scope):
            raise LightfastError(code="permission_denied", message=f"This needs the `{scope}` scope.")

    async def _on_message(self, frame: dict[str, Any]) -> None:
        self._require(Scope.EXECUTE)
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            raise LightfastError(code="invalid_frame", message="`text` must be a non-empty string.")
        session_id = frame.get("session")
        if session_id is not None and not isinstance(session_id, str):
            raise LightfastError(code="invalid_frame", message="`session` must be a string.")
        if len(self.streams) >= MAX_STREAMS_PER_CONNECTION:
            raise LightfastError(code="invalid_frame", message="Too many runs streaming on this connection.")
        run_id, session_public_id = await sync_to_async(self._start_run)(text, session_id)
        await self._enqueue({"type": "run-accepted", "run": run_id, "session": session_public_id})
        self._stream(run_id, after=0)

    def _start_run(self, text: str, session_id: str | None) -> tuple[str, str]:
        run = chat_run_start(
            organization=self.tenant.organization,
            target=self.target,
            created_by=self.tenant.actor.user,
            text=text,
            session_id=session_id,
        )
        assert run.session is not None
        return str(run.pk), run.session.public_id

    async def _on_continue(self, frame: dict[str, Any]) -> None:
        """Client-side tool results and approval responses for the session's last answer: a run
        continues that answer (`chat_tools.chat_run_continue`), streamed like a message's run."""
        self._require(Scope.EXECUTE)
        session_id = frame.get("session")
        if not isinstance(session_id, str):
            raise LightfastError(code="invalid_frame", message="`session` must be the chat's session id.")
        responses, approvals = tool_responses_from_frame(frame)
        if len(self.streams) >= MAX_STREAMS_PER_CONNECTION:
            raise LightfastError(code="invalid_frame", message="Too many runs streaming on this connection.")
        run = await sync_to_async(chat_run_continue)(
            organization=self.tenant.organization,
            target=self.target,
            created_by=self.tenant.actor.user,
            session_id=session_id,
            responses=responses,
            approvals_by_id=approvals,
        )
        await self._enqueue({"type": "run-accepted", "run": str(run.pk), "session": session_id})
        self._stream(str(run.pk), after=0)

    async def _on_cancel(self, frame: dict[str, Any]) -> None:
        self._require(Scope.EXECUTE)
        run_id = self._run_field(frame)
        try:
            run = await sync_to_async(client_token_run_get)(tenant=self.tenant, run_id=run_id)
        except LightfastError as exc:
            await self._enqueue(ws_error_frame(exc, run=run_id))
            return
        await sync_to_async(run_cancel)(run=run)

    async def _on_resume(self, frame: dict[str, Any]) -> None:
        self._require(Scope.READ)
        run_id = self._run_field(frame)
        after = frame.get("after", 0)
        try:
            if isinstance(after, bool) or not isinstance(after, int) or after < 0:
                raise LightfastError("`after` must be a non-negative integer seq.", code="invalid_frame")
            run = await sync_to_async(client_token_run_get)(tenant=self.tenant, run_id=run_id)
        except LightfastError as exc:
            await self._enqueue(ws_error_frame(exc, run=run_id))
            return
        if len(self.streams) >= MAX_STREAMS_PER_CONNECTION and str(run.pk) not in self.streams:
            raise LightfastError(code="invalid_frame", message="Too many runs streaming on this connection.")
        self._stream(str(run.pk), after=after)

    @staticmethod
    def _run_field(frame: dict[str, Any]) -> str:
        run_id = frame.get("run")
        if not isinstance(run_id, str) or not run_id:
            raise LightfastError(code="invalid_frame", message="`run` must be a run id.")
        try:
            return str(uuid.UUID(run_id))
        except ValueError:
            return run_id[:64]  # `run_get` answers `not_found` for it, the error frame naming it

    # --- streaming ----------------------------------------------------------------------------

    def _stream(self, run_id: str, *, after: int) -> None:
        """(Re)start streaming a run from `after`; a resume replaces the run's current stream."""
        previous = self.streams.pop(run_id, None)
        if previous is not None:
            previous.cancel()
        self.streams[run_id] = asyncio.ensure_future(self._pump(run_id, after, previous))

    async def _pump(self, run_id: str, after: int, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            try:
                await previous
            except asyncio.CancelledError:
                pass  # the stream this resume replaces
        try:
            # Closed here, not when the garbage collector finds it: a stream cancelled while it
            # waits on the queue (the client left) leaves its subscription at once.
            async with contextlib.aclosing(run_event_stream(uuid.UUID(run_id), after=after)) as events:
                async for event in events:
                    if is_private_chunk(event.chunk):
                        continue  # a tool's log lines the agent did not opt to stream
                    await self._enqueue({"run": run_id, "seq": event.seq, **event.chunk})
        finally:
            if self.streams.get(run_id) is asyncio.current_task():
                del self.streams[run_id]

    async def _close_after(self, frame: dict[str, Any], code: int) -> None:
        """Send `frame`, then close with `code`; nothing else is read or streamed meanwhile."""
        self.closing = True
        for task in list(self.streams.values()):
            task.cancel()
        await self._enqueue(frame)
        await self.queue.put(code)

    async def _enqueue(self, frame: dict[str, Any]) -> None:
        # Waits while the queue is full: that pauses our own database reads, not the client.
        await self.queue.put(json.dumps(frame))

    async def _write_loop(self) -> None:
        transport = self.scope.get(TRANSPORT_SCOPE_KEY)
        limit = int(_setting("LIGHTFAST_WS_MAX_BUFFERED_BYTES", MAX_BUFFERED_BYTES))
        grace = float(_setting("LIGHTFAST_WS_SLOW_CLIENT_GRACE_S", SLOW_CLIENT_GRACE_S))
        keepalive = float(settings.LIGHTFAST_STREAM_KEEPALIVE_S)
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    text = await self.queue.get()
            except TimeoutError:
                # Nothing sent for a while (a slow tool call): proxies with idle timeouts keep it open.
                text = PING_FRAME
            if text is None:
                return
            if isinstance(text, int):
                await self.close(text)
                return
            waited = 0.0
            while transport_backlog_bytes(transport) > limit:
                if waited >= grace:
                    await self._drop_slow_client(transport)
                    return
                await asyncio.sleep(0.05)
                waited += 0.05
            try:
                async with asyncio.timeout(grace):
                    await self.send(text_data=text)
            except TimeoutError:
                await self._drop_slow_client(transport)
                return

    async def _drop_slow_client(self, transport: Any) -> None:
        """Close with 4008 a client that stopped reading, and drop the connection.

        The close frame queues behind what the client did not read, so the connection is aborted
        right after it: the client may only see the connection drop.
        """
        logger.info("websocket client too slow to read; disconnecting")
        self.closing = True
        for task in list(self.streams.values()):
            task.cancel()
        try:
            async with asyncio.timeout(0.5):
                await self.close(CLOSE_SLOW_CLIENT)
        except TimeoutError:
            pass  # the server waits for the client to read before it writes the close frame
        transport_abort(transport)
