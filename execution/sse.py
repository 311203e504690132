"""Server-Sent Events for AI SDK clients: `useChat` posts here and reads the UI message stream."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import APIException, MethodNotAllowed, PermissionDenied
from rest_framework.request import Request

from execution.client_tokens import ClientTokenAuthentication, client_token_check_agent
from execution.credential_watch import CredentialWatch
from execution.models import Run, run_group_name
from execution.sandbox.frames import MAX_FRAME_DEPTH, check_depth
from execution.sandbox.protocol import FrameViolation
from execution.sandbox.values import clean_value
from execution.selectors import agent_target_resolve, run_get, session_get
from execution.services import chat_run_start, run_cancel
from execution.services.chat import chat_turn_check
from execution.stream import Notifications, StreamedEvent, is_private_chunk, run_event_batches
from lightfast_cloud.api_errors import TEXT_ERROR_HEADER, api_exception_handler
from lightfast_cloud.api_input import query_int, query_value
from lightfast_cloud.errors import LightfastError, sse_error_chunk
from organizations.authentication import ApiKeyAuthentication, MemberSessionAuthentication
from organizations.models import Scope
from organizations.ratelimits import ratelimit_apply_headers
from organizations.tenancy import CredentialsRevoked, Tenant, tenant_admit, tenant_recheck

logger = logging.getLogger(__name__)

STREAM_HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "Cache-Control": "no-cache, no-transform",
    # Proxies such as nginx must not buffer the stream.
    "X-Accel-Buffering": "no",
}


def _tenant_for(request: HttpRequest, scope: str) -> Tenant:
    """Authenticate like the REST API (bearer key, or session with CSRF), or with a client token for
    this agent, and check `scope`."""
    drf_request = Request(
        request,
        authenticators=[ClientTokenAuthentication(), ApiKeyAuthentication(), MemberSessionAuthentication()],
    )
    # The chat route is an API route like any other: the client IP's failed authentications and
    # the organization's rate apply.
    tenant = tenant_admit(drf_request)
    route = request.resolver_match.kwargs if request.resolver_match is not None else {}
    client_token_check_agent(tenant, str(route.get("bundle")), str(route.get("agent")))
    if not tenant.has_scope(scope):
        raise PermissionDenied(f"This action needs the `{scope}` scope.")
    return tenant


def _exception_response(exc: Exception, *, allow: str) -> HttpResponse:
    """The JSON error for `exc`; a 405 names the route's methods in `Allow` (RFC 9110)."""
    response = api_exception_handler(exc, {})
    if response is None:
        raise exc
    json_response = JsonResponse(response.data, status=response.status_code)
    for header in ("WWW-Authenticate", "Allow"):
        if response.has_header(header):
            json_response[header] = response[header]
    if isinstance(exc, MethodNotAllowed):
        json_response["Allow"] = allow
    return json_response


# Compact JSON for `data:` lines. One encoder for every chunk: `json.dumps` with `separators` builds
# a new one per call, a third of its time for a chunk of the stream.
_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def sse_frame(run_id: str, seq: int, chunk: dict[str, Any]) -> str:
    """One SSE event: `id: <run>:<seq>` and the chunk as `data:`."""
    return f"id: {run_id}:{seq}\ndata: {_compact_json(chunk)}\n\n"


# Tasks cancelling runs whose client went away (kept referenced until they are done).
_background: set[asyncio.Future[Any]] = set()


def _run_cancel_now(run_id: uuid.UUID) -> None:
    run = Run.objects.filter(pk=run_id).first()
    if run is not None and not run.is_terminal:
        run_cancel(run=run)


def _cancel_in_background(run_id: uuid.UUID) -> None:
    """Cancel the run of a client that went away, in a task that may outlive the request.

    Not thread-sensitive: the task may outlive the request (and its request thread); the database
    connection it uses is given back when it is done.
    """
    cancel = database_sync_to_async(_run_cancel_now, thread_sensitive=False)
    cancelling = asyncio.ensure_future(cancel(run_id))
    _background.add(cancelling)
    cancelling.add_done_callback(_background.discard)


def _notifications(run_id: uuid.UUID, tenant: Tenant) -> Notifications:
    """One channel for the run's events and the credential groups."""
    return Notifications(run_group_name(run_id), *tenant.connection_groups)


async def _frames(
    run_id: uuid.UUID,
    after: int,
    tenant: Tenant,
    *,
    cancel_on_disconnect: bool = False,
    subscribed: Notifications | None = None,
) -> AsyncGenerator[str, None]:
    # One channel for the run's events and the credential groups: a message on a credential group
    # nudges the watch (it re-reads the database); the run's events arrive in batches, each written
    # to the client as one chunk. `subscribed`: that channel, joined before the run was created
    # (this stream closes it) and before the credentials were re-read in the run's start, so the
    # first database read and the watch's first re-check are skipped.
    run_ref = str(run_id)
    watch = CredentialWatch(tenant)
    notifications = subscribed or _notifications(run_id, tenant)
    if subscribed is None:
        await notifications.subscribe()
    batches = run_event_batches(
        run_id,
        after=after,
        notifications=notifications,
        on_other_message=lambda _: watch.nudge(),
        replay=subscribed is None,
    )
    revoked = asyncio.ensure_future(watch.revoked(checked=subscribed is not None))
    following: asyncio.Future[Any] | None = None
    keepalive: float = settings.LIGHTFAST_STREAM_KEEPALIVE_S
    finished = False
    try:
        while not finished:
            if following is None:
                following = asyncio.ensure_future(anext(batches))
            done, _ = await asyncio.wait(
                {following, revoked}, timeout=keepalive, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                # A quiet run (a slow tool call): a comment line keeps idle-timeout proxies open.
                yield ": keep-alive\n\n"
                continue
            if revoked in done:
                finished = True
                chunk = sse_error_chunk(revoked.result())
                yield f"data: {_compact_json(chunk)}\n\n"
                return
            try:
                batch: list[StreamedEvent] = following.result()
            except StopAsyncIteration:
                finished = True
                yield "data: [DONE]\n\n"
                return
            finally:
                following = None
            text = "".join(
                sse_frame(run_ref, event.seq, event.chunk)
                for event in batch
                if not is_private_chunk(event.chunk)
            )
            if batch[-1].terminal:
                # The run's last event: the stream ends with it (one write for both).
                finished = True
                text += "data: [DONE]\n\n"
            if text:
                yield text
    finally:
        if not finished and cancel_on_disconnect:
            # The client went away before the run ended (the AI SDK's `stop()` aborts the request)
            # and did not say it would resume: stop the run instead of spending quota on it.
            _cancel_in_background(run_id)
        for task in (following, revoked):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await task
        await batches.aclose()
        await notifications.close()


def _stream(
    run_id: uuid.UUID, after: int, tenant: Tenant, *, cancel_on_disconnect: bool = False
) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        _frames(run_id, after, tenant, cancel_on_disconnect=cancel_on_disconnect),
        content_type="text/event-stream",
    )
    for name, value in STREAM_HEADERS.items():
        response[name] = value
    return response


# Chat starts that follow their response head: long-lived threads that keep their database
# connections, as the request threads do (lightfast_cloud/asgi_handler.py), apart from them so that a
# start waiting for the write gate holds up no other request.
_starts = ThreadPoolExecutor(max_workers=settings.LIGHTFAST_WEB_THREADS, thread_name_prefix="chat-start")


async def _frames_after_start(
    start: Callable[..., Run], tenant: Tenant, *, cancel_on_disconnect: bool
) -> AsyncIterator[str]:
    """Start the run (`start(run_id=)`, its request checked whole before the head went out), then stream it.

    The stream joins the run's group and the credential groups before the run exists (its id is
    chosen here), so it reads no events from the database that cannot be there yet; the start's
    thread hop re-reads the credentials first (`_start_checked`: what the stream's credential
    watch would otherwise do in a hop of its own), so a key revoked since the request was
    authenticated starts no run. A start refused in its own transaction (the
    request lost a race meanwhile, such as the last run slot) or failed by the database ends the
    stream with an `error` chunk. A client that goes away while its run starts gets the run
    cancelled once it exists, as any run whose client went away.
    """
    run_id = uuid.uuid4()
    notifications = _notifications(run_id, tenant)
    starting: asyncio.Future[Run] | None = None
    error: LightfastError | None = None
    handed_over = False
    try:
        await notifications.subscribe()
        starting = asyncio.ensure_future(
            database_sync_to_async(
                functools.partial(_start_checked, start, tenant, run_id),
                thread_sensitive=False,
                executor=_starts,
            )()
        )
        await asyncio.shield(starting)
        handed_over = True  # to `_frames`, which closes the subscription
    except asyncio.CancelledError:
        if cancel_on_disconnect and starting is not None:
            starting.add_done_callback(_cancel_once_started)
        raise
    except LightfastError as exc:
        error = exc
    except (OperationalError, InterfaceError) as exc:
        error = _database_unavailable(exc)
    finally:
        if not handed_over:
            await notifications.close()
    if error is not None:
        # Credentials that stopped holding end the stream as they do mid-run: without `[DONE]`.
        done = "" if isinstance(error, CredentialsRevoked) else "data: [DONE]\n\n"
        yield f"data: {_compact_json(sse_error_chunk(error))}\n\n{done}"
        return
    frames = _frames(run_id, 0, tenant, cancel_on_disconnect=cancel_on_disconnect, subscribed=notifications)
    async with contextlib.aclosing(frames):
        async for text in frames:
            yield text


def _start_checked(start: Callable[..., Run], tenant: Tenant, run_id: uuid.UUID) -> Run:
    """The run's start, after the credentials are read again (the stream has joined their groups)."""
    tenant_recheck(tenant)  # raises CredentialsRevoked, a LightfastError: the stream's error chunk
    return start(run_id=run_id)


def _database_unavailable(exc: Exception) -> LightfastError:
    logger.warning("database unreachable for a chat start: %s", exc)
    return LightfastError(
        code="service_unavailable", message="The database is unreachable at the moment; try again shortly."
    )


def _cancel_once_started(starting: asyncio.Future[Any]) -> None:
    if not starting.cancelled() and starting.exception() is None:
        _cancel_in_background(starting.result().pk)


RESUMABLE_HEADER = "X-Lightfast-Resumable"
# The largest seq a resume point may name (nine digits).
RESUME_SEQ_MAX = 999_999_999


def _body(request: HttpRequest) -> Any:
    """The request's JSON body, bounded by LIGHTFAST_CHAT_MAX_REQUEST_BYTES (not the REST API's limit:
    the AI SDK posts the whole conversation on every turn, and only what is stored is bounded)."""
    limit: int = settings.LIGHTFAST_CHAT_MAX_REQUEST_BYTES
    raw = request.read(limit + 1)
    if len(raw) > limit:
        raise LightfastError(
            code="payload_too_large",
            message=f"The chat request is larger than {limit // (1024 * 1024)} MiB. Start a new chat.",
        )
    try:
        # Stored tool outputs nest up to the sandbox's output depth, and the client posts them back.
        check_depth(raw, MAX_FRAME_DEPTH)
    except FrameViolation as exc:
        raise LightfastError(
            code="invalid_input", message=f"The chat request nests deeper than {MAX_FRAME_DEPTH} levels."
        ) from exc
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise LightfastError(code="malformed_json", message="The request body is not valid JSON.") from exc
    return clean_value(body)  # NUL and unpaired surrogates become U+FFFD (the platform's value rule)


def _prepare(
    request: HttpRequest, bundle: str, agent: str, body: Any
) -> tuple[Callable[[], Run], Tenant, bool]:
    """Check a chat request whole: the start to call, the tenant, whether the start may follow the head.

    Every refusal of a user's turn is raised here, with its status (`chat_turn_check`); a request that
    continues an answer (tool results, approvals) is checked by its start, which must then come first.
    """
    tenant = _tenant_for(request, Scope.EXECUTE)
    target = agent_target_resolve(organization=tenant.organization, bundle=bundle, agent=agent)
    if isinstance(body, LightfastError):
        raise body
    if not isinstance(body, dict) or "messages" not in body:
        raise LightfastError(code="invalid_input", message="Expected the useChat body `{id, messages}`.")
    chat_id = body.get("id")
    if chat_id is not None and not isinstance(chat_id, str):
        raise LightfastError(code="invalid_input", message="`id` must be a string.")
    start = functools.partial(
        chat_run_start,
        organization=tenant.organization,
        target=target,
        created_by=tenant.actor.user,
        messages=body["messages"],
        session_id=chat_id or None,
        trigger=body.get("trigger"),
    )
    after_head = chat_turn_check(
        organization=tenant.organization,
        target=target,
        messages=body["messages"],
        session_id=chat_id or None,
        trigger=body.get("trigger"),
    )
    return start, tenant, after_head


def _resumable(request: HttpRequest, body: Any) -> bool:
    """The client said it resumes after a disconnect (so a disconnect does not cancel the run)."""
    if isinstance(body, dict) and body.get("resumable") is True:
        return True
    return request.headers.get(RESUMABLE_HEADER, "").strip().lower() in ("1", "true", "yes")


def _wants_text_errors(request: HttpRequest, body: Any) -> bool:
    """AI SDK transports (their body has `trigger`) show a refused request's body as `error.message`."""
    if "application/json" in request.headers.get("Accept", ""):
        return False
    return (isinstance(body, dict) and "trigger" in body) or request.headers.get("Accept", "").startswith(
        "text/plain"
    )


def _text_error_response(response: HttpResponse) -> HttpResponse:
    """The JSON error answer as plain readable text (the type in `X-Lightfast-Error`)."""
    error = json.loads(response.content).get("error") or {}
    text = HttpResponse(
        str(error.get("message") or "The request was refused."),
        status=response.status_code,
        content_type="text/plain; charset=utf-8",
    )
    text[TEXT_ERROR_HEADER] = str(error.get("type") or "unknown")
    for header in ("WWW-Authenticate", "Allow", "Retry-After"):
        if response.has_header(header):
            text[header] = response[header]
    return text


def _resume_point(request: HttpRequest, bundle: str, agent: str) -> tuple[uuid.UUID, int, Tenant]:
    tenant = _tenant_for(request, Scope.READ)
    # `Last-Event-ID` is what an EventSource sends back: one of ours (`<run>:<seq>`) resumes; any
    # other id (a stream of someone else's) says nothing, and the query is read instead.
    run_ref, _, seq_text = request.headers.get("Last-Event-ID", "").strip().rpartition(":")
    if run_ref and re.fullmatch("[0-9]{1,9}", seq_text):
        after = int(seq_text)
    else:
        run_ref = query_value(request, "run") or ""
        after = query_int(request, "after", default=0, minimum=0, maximum=RESUME_SEQ_MAX)
    if not run_ref:
        raise LightfastError(
            code="invalid_input", message="Send `Last-Event-ID: <run>:<seq>` (or `?run=&after=`) to resume."
        )
    run = run_get(organization=tenant.organization, run_id=run_ref)
    if run.bundle_version.bundle.slug != bundle or run.agent_key != agent:
        raise LightfastError(code="not_found", message="No such run of this agent.")
    return run.pk, after, tenant


def _active_run(
    request: HttpRequest, bundle: str, agent: str, chat_id: str
) -> tuple[uuid.UUID | None, Tenant]:
    tenant = _tenant_for(request, Scope.READ)
    session = session_get(organization=tenant.organization, public_id=chat_id)
    if session is None:
        # A chat the server never saw has no active stream either (`useChat({resume: true})` on
        # a fresh chat reconnects before its first message).
        return None, tenant
    if session.agent != f"{bundle}/{agent}":
        raise LightfastError(code="not_found", message="No such chat.")
    run = session.runs.order_by("-created_at").first()
    if run is None or run.is_terminal:
        return None, tenant
    return run.pk, tenant


# The views are synchronous: under the web processes' handler (lightfast_cloud/asgi_handler.py) the
# middleware chain, the body, the authentication and the run's start take one thread hop together,
# and only the stream (an async generator) runs on the event loop.
@csrf_exempt  # session callers are CSRF-checked by MemberSessionAuthentication, as in the REST API
def chat_view(request: HttpRequest, bundle: str, agent: str) -> HttpResponseBase:
    """POST: start a chat run from a `useChat` body and stream it; GET: resume after `Last-Event-ID`."""
    response: HttpResponseBase
    text_errors = False
    try:
        if request.method == "POST":
            try:
                body = _body(request)
            except LightfastError as exc:
                body = exc  # refused after authentication, like any other refusal
            text_errors = _wants_text_errors(request, body)
            start, tenant, after_head = _prepare(request, bundle, agent, body)
            cancel_on_disconnect = not _resumable(request, body)
            if after_head:
                # The head goes out now: the run starts on the stream's side (`_frames_after_start`).
                response = StreamingHttpResponse(
                    _frames_after_start(start, tenant, cancel_on_disconnect=cancel_on_disconnect),
                    content_type="text/event-stream",
                )
                for name, value in STREAM_HEADERS.items():
                    response[name] = value
            else:
                response = _stream(start().pk, 0, tenant, cancel_on_disconnect=cancel_on_disconnect)
        elif request.method == "GET":
            run_id, after, tenant = _resume_point(request, bundle, agent)
            response = _stream(run_id, after, tenant)
        else:
            raise MethodNotAllowed(request.method or "")
    except (APIException, Http404, LightfastError) as exc:
        response = _exception_response(exc, allow="GET, POST")
        if text_errors:
            response = _text_error_response(response)
    return ratelimit_apply_headers(request, response)  # type: ignore[no-any-return]


@csrf_exempt
def chat_reconnect_view(request: HttpRequest, bundle: str, agent: str, chat_id: str) -> HttpResponseBase:
    """The AI SDK's reconnect: the chat's running run from its first event, or 204 when none runs."""
    response: HttpResponseBase
    try:
        if request.method != "GET":
            raise MethodNotAllowed(request.method or "")
        run_id, tenant = _active_run(request, bundle, agent, chat_id)
        response = HttpResponse(status=204) if run_id is None else _stream(run_id, 0, tenant)
    except (APIException, Http404, LightfastError) as exc:
        response = _exception_response(exc, allow="GET")
    return ratelimit_apply_headers(request, response)  # type: ignore[no-any-return]
