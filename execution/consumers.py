"""The chat websocket `/ws/v1/chat/{bundle}/{agent}/`: start, cancel and resume runs, stream their events."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from execution.client_tokens import client_token_run_get
from execution.credential_watch import CredentialWatch
from execution.sandbox.values import clean_value
from execution.selectors import AgentTarget, agent_target_resolve
from execution.services import chat_run_start, run_cancel
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

    ASGI `send` under daphne never blocks (Twisted buffers whatever is written), so the only way to
    notice a client that stopped reading is to look at the transport's write buffer.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        protocol = send.args[0] if isinstance(send, partial) and send.args else None
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            scope = dict(scope, **{TRANSPORT_SCOPE_KEY: transport})
        await self.app(scope, receive, send)


def transport_backlog_bytes(transport: Any) -> int:
    """Bytes written to a Twisted transport but not yet sent to the peer (0 when unknown)."""
    if transport is None:
        return 0
    buffered = getattr(transport, "dataBuffer", b"")
    offset = int(getattr(transport, "offset", 0) or 0)
    pending = int(getattr(transport, "_tempDataLen", 0) or 0)
    return max(0, len(buffered) - offset) + pending


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
        route = self.scope["url_route"]["kwargs"]
        subprotocol = accepted_subprotocol(self.scope)
        ip = client_ip_of_scope(self.scope)
        # Credentials, then the IP's and organization's limits, then anything that depends on them:
        # a blocked IP gets the same 4429 whatever it presents (see ws_tenant_resolve).
        try:
            self.tenant = await sync_to_async(ws_tenant_resolve)(self.scope, ip=ip)
            await sync_to_async(ratelimit_ws_connect)(
                organization=self.tenant.organization, api_key=self.tenant.api_key, ip=ip
            )
            self.target = await sync_to_async(agent_target_resolve)(
                organization=self.tenant.organization, bundle=route["bundle"], agent=route["agent"]
            )
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
            elif kind == "ping":
                await self._enqueue({"type": "pong"})
            else:
                raise LightfastError(
                    code="invalid_frame",
                    message="Unknown frame type; expected message, cancel, resume or ping.",
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
            async for event in run_event_stream(uuid.UUID(run_id), after=after):
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
                text = await asyncio.wait_for(self.queue.get(), timeout=keepalive)
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
                    logger.info("websocket client too slow to read; disconnecting")
                    self.closing = True
                    for task in list(self.streams.values()):
                        task.cancel()
                    await self.close(CLOSE_SLOW_CLIENT)
                    return
                await asyncio.sleep(0.05)
                waited += 0.05
            await self.send(text_data=text)
