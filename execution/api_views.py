"""REST API v1 for runs, their events, chat sessions and websocket tickets; thin wrappers over services."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request
from rest_framework.response import Response

from execution.client_tokens import client_token_issue
from execution.models import ChatSession, Message, Run, RunStatus
from execution.selectors import (
    agent_target_parse,
    agent_target_resolve,
    run_events_after,
    run_get,
    run_queryset_filter,
    run_wait,
    session_get,
)
from execution.serializers import (
    ChatSessionSerializer,
    ClientTokenCreateSerializer,
    ClientTokenSerializer,
    MessageSerializer,
    RunCreateSerializer,
    RunEventsSerializer,
    RunSerializer,
    RunStartedSerializer,
    WsTicketSerializer,
    run_events_page,
)
from execution.services import chat_run_start, run_cancel
from execution.stream import REPLAY_BATCH
from execution.ws_auth import ws_ticket_issue
from lightfast_cloud.api_errors import ErrorResponseSerializer
from lightfast_cloud.api_input import query_choice, query_int, query_number, query_value
from lightfast_cloud.errors import LightfastError
from organizations.models import Scope
from organizations.tenancy import OrganizationScopedAPIView, OrganizationScopedGenericAPIView

WAIT_MAX_S = 60.0
# One instance of each renders every single run: a DRF ModelSerializer builds its fields per
# instance, which cost more than the rest of the rendering (to_representation keeps no state).
_RUN_STARTED = RunStartedSerializer()
_RUN = RunSerializer()
# The largest seq a client can name (events are counted in a 32-bit column).
MAX_SEQ = 2_000_000_000


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorResponseSerializer, description=description)


COMMON_ERRORS = {
    401: _error("Missing or invalid credentials."),
    403: _error("The credentials lack the scope (`permission_denied`)."),
    404: _error("No such run, session or agent in your organization (`not_found`)."),
}
RUN_ID = OpenApiParameter("run_id", str, OpenApiParameter.PATH, description="The run's id (UUID).")
SESSION_ID = OpenApiParameter("session_id", str, OpenApiParameter.PATH, description="The session's id.")


class Pagination(LimitOffsetPagination):
    """`?limit=&offset=`; answers `{count, next, previous, results}`. A limit or offset that is not an
    integer in its range is a 400 (DRF's own would quietly use the default)."""

    default_limit = 50
    max_limit = 500
    max_offset = 2_000_000_000

    def get_limit(self, request: Any) -> int:
        return query_int(request, "limit", default=self.default_limit, minimum=1, maximum=self.max_limit)

    def get_offset(self, request: Any) -> int:
        return query_int(request, "offset", default=0, minimum=0, maximum=self.max_offset)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        bounds = {"limit": (1, self.max_limit), "offset": (0, self.max_offset)}
        for parameter in parameters:
            minimum, maximum = bounds[parameter["name"]]
            parameter["schema"].update(minimum=minimum, maximum=maximum)
        return parameters


class RunAPIView(OrganizationScopedAPIView):
    """Looks up the caller's runs; another organization's run is a 404."""

    def get_run(self, run_id: str) -> Run:
        """The caller's run or a 404."""
        return run_get(organization=self.organization, run_id=run_id)


def _wait_seconds(request: Request) -> float:
    return query_number(request, "wait", default=0.0, minimum=0.0, maximum=WAIT_MAX_S)


WAIT = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0, "maximum": WAIT_MAX_S},
    description=f"Wait up to this many seconds (≤ {WAIT_MAX_S:g}) for the end.",
)


class RunListView(OrganizationScopedGenericAPIView):
    """The organization's runs (filtered, paginated); POST starts a chat run."""

    queryset = Run.objects.select_related("bundle_version__bundle", "session")
    serializer_class = RunSerializer
    pagination_class = Pagination
    scope_by_method = {"POST": Scope.EXECUTE}

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Scoped runs, filtered by `status`, `agent` (`bundle/agentKey`) and `session`."""
        runs: QuerySet[Run] = super().filter_queryset(queryset)
        request = self.request
        return run_queryset_filter(
            runs,
            status=query_choice(request, "status", list(RunStatus.values)),
            agent=query_value(request, "agent"),
            session=query_value(request, "session"),
        )

    @extend_schema(
        operation_id="runs_list",
        parameters=[
            OpenApiParameter("status", str, enum=RunStatus.values, description="Only runs with this status."),
            OpenApiParameter("agent", str, description="Only runs of this agent (`bundle/agentKey`)."),
            OpenApiParameter("session", str, description="Only runs of this chat session."),
        ],
        responses={200: RunSerializer(many=True), **COMMON_ERRORS},
        tags=["runs"],
    )
    def get(self, request: Request) -> Response:
        """Runs, newest first."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(RunSerializer(page, many=True).data)

    @extend_schema(
        operation_id="runs_create",
        request=RunCreateSerializer,
        parameters=[WAIT],
        responses={
            202: RunStartedSerializer,
            200: RunStartedSerializer,
            400: _error("Invalid body, agent or input (`invalid_input`, `invalid_bundle`)."),
            **COMMON_ERRORS,
            403: _error(
                "The credentials lack the `execute` scope (`permission_denied`), or a quota is used up "
                "(`quota_exceeded`: the detail names the quota, its limit, what is used and when it resets)."
            ),
        },
        description="Starts a chat run. Answers 202 at once (or 200 with the ended run when `?wait=S` "
        "saw it end), with URLs to follow its events.",
        tags=["runs"],
    )
    def post(self, request: Request) -> Response:
        """Start a run."""
        wait_s = _wait_seconds(request)
        body = RunCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        target = agent_target_parse(organization=self.organization, agent_id=data["agent"])
        run = chat_run_start(
            organization=self.organization,
            target=target,
            created_by=self.tenant.actor.user,
            text=data.get("input"),
            messages=data.get("messages"),
            session_id=data.get("session"),
        )
        if wait_s:
            run = run_wait(organization=self.organization, run_id=run.pk, timeout_s=wait_s)
        # Without `wait` the answer is always 202 with the run as it was created (queued), not read
        # back: neither the status code nor the body depends on how fast a worker took it.
        return Response(
            _RUN_STARTED.to_representation(run),
            status=status.HTTP_200_OK if wait_s and run.is_terminal else status.HTTP_202_ACCEPTED,
            headers={"Location": f"/api/v1/runs/{run.pk}"},
        )


class RunDetailView(RunAPIView):
    """One run."""

    @extend_schema(
        operation_id="runs_retrieve",
        parameters=[RUN_ID],
        responses={200: RunSerializer, **COMMON_ERRORS},
        tags=["runs"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        """The run with status, error and usage."""
        return Response(_RUN.to_representation(self.get_run(run_id)))


class RunEventsView(RunAPIView):
    """A run's stored events after a seq."""

    @extend_schema(
        operation_id="runs_events",
        parameters=[
            RUN_ID,
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                description="Only events with a greater seq (default 0).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": REPLAY_BATCH},
                description=f"At most this many events (default and max {REPLAY_BATCH}).",
            ),
        ],
        responses={200: RunEventsSerializer, 400: _error("Bad `after` or `limit`."), **COMMON_ERRORS},
        tags=["runs"],
    )
    def get(self, request: Request, run_id: str) -> Response:
        """Events in seq order; poll with `after` = the last seq seen until `done`."""
        run = self.get_run(run_id)
        after = query_int(request, "after", default=0, minimum=0, maximum=MAX_SEQ)
        limit = query_int(request, "limit", default=REPLAY_BATCH, minimum=1, maximum=REPLAY_BATCH)
        ended = run.is_terminal  # read before the events: a terminal run's events are all committed
        events = run_events_after(run, after, limit=limit)
        last_seq = events[-1].seq if events else after
        return Response(run_events_page(run, events, last_seq=last_seq, done=ended and len(events) < limit))


class RunCancelView(RunAPIView):
    """Cancel a run."""

    scope_by_method = {"POST": Scope.EXECUTE}

    @extend_schema(
        operation_id="runs_cancel",
        request=None,
        parameters=[RUN_ID],
        responses={200: RunSerializer, **COMMON_ERRORS},
        description="A queued run ends `cancelled` at once; a running one within a second. Cancelling an "
        "ended run changes nothing.",
        tags=["runs"],
    )
    def post(self, request: Request, run_id: str) -> Response:
        """Request cancellation."""
        run = run_cancel(run=self.get_run(run_id))
        return Response(RunSerializer(run_get(organization=self.organization, run_id=run.pk)).data)


class SessionListView(OrganizationScopedGenericAPIView):
    """The organization's chat sessions, most recently active first."""

    queryset = ChatSession.objects.all()
    serializer_class = ChatSessionSerializer
    pagination_class = Pagination

    def filter_queryset(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        """Scoped sessions, filtered by `agent`."""
        sessions: QuerySet[ChatSession] = super().filter_queryset(queryset)
        agent = query_value(self.request, "agent")
        if agent:
            sessions = sessions.filter(agent=agent)
        return sessions

    @extend_schema(
        operation_id="sessions_list",
        parameters=[
            OpenApiParameter("agent", str, description="Only sessions with this agent (`bundle/agentKey`).")
        ],
        responses={200: ChatSessionSerializer(many=True), **COMMON_ERRORS},
        tags=["sessions"],
    )
    def get(self, request: Request) -> Response:
        """Sessions, paginated."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(ChatSessionSerializer(page, many=True).data)


class SessionAPIView(OrganizationScopedGenericAPIView):
    """Looks up the caller's session by its public id."""

    queryset = ChatSession.objects.all()

    def get_session(self, session_id: str) -> ChatSession:
        """The caller's session or a 404."""
        session = session_get(organization=self.organization, public_id=session_id)
        if session is None:
            raise LightfastError("No such session.", code="not_found")
        return session


class SessionDetailView(SessionAPIView):
    """One chat session."""

    serializer_class = ChatSessionSerializer

    @extend_schema(
        operation_id="sessions_retrieve",
        parameters=[SESSION_ID],
        responses={200: ChatSessionSerializer, **COMMON_ERRORS},
        tags=["sessions"],
    )
    def get(self, request: Request, session_id: str) -> Response:
        """The session."""
        return Response(ChatSessionSerializer(self.get_session(session_id)).data)


class SessionMessagesView(SessionAPIView):
    """A session's messages, oldest first."""

    serializer_class = MessageSerializer
    pagination_class = Pagination

    @extend_schema(
        operation_id="sessions_messages",
        parameters=[SESSION_ID],
        responses={200: MessageSerializer(many=True), **COMMON_ERRORS},
        tags=["sessions"],
    )
    def get(self, request: Request, session_id: str) -> Response:
        """Messages as AI SDK UI messages, paginated."""
        messages: QuerySet[Message] = self.get_session(session_id).messages.order_by("created_at", "pk")
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


class ClientTokenView(OrganizationScopedAPIView):
    """Mint a client token: a browser's credentials for one agent's chat, without the API key."""

    scope_by_method = {"POST": Scope.EXECUTE}

    @extend_schema(
        operation_id="client_tokens_create",
        summary="Mint a client token for one agent's chat",
        request=ClientTokenCreateSerializer,
        responses={201: ClientTokenSerializer, **COMMON_ERRORS, 400: _error("Invalid input.")},
        description="Needs an API key with the execute scope. The token works only on the chat "
        "endpoints (SSE and websocket) of the named agent, only until it expires (default 10 min, at "
        "most 1 h), and only while the key that minted it holds. Browser pages must also be on one of "
        "the organization's allowed origins (`/allowed-origins`).",
        tags=["runs"],
    )
    def post(self, request: Request) -> Response:
        """A new client token."""
        serializer = ClientTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        target = agent_target_resolve(
            organization=self.organization, bundle=data["bundle"], agent=data["agent"]
        )
        token = client_token_issue(
            tenant=self.tenant,
            bundle=target.version.bundle.slug,
            agent=target.agent_key,
            ttl_s=data["ttl_seconds"],
        )
        return Response(ClientTokenSerializer(token).data, status=status.HTTP_201_CREATED)


class WsTicketView(OrganizationScopedAPIView):
    """Issue a websocket ticket (for browsers, which cannot send headers on a websocket)."""

    # A ticket carries the caller's own scopes, so any caller may have one.
    scope_by_method = {"POST": Scope.READ}

    @extend_schema(
        operation_id="ws_tickets_create",
        request=None,
        responses={201: WsTicketSerializer, **COMMON_ERRORS},
        description="A single-use ticket valid for 30 s: connect to "
        "`/ws/v1/chat/{bundle}/{agent}/?ticket=…`. It carries the caller's organization and scopes.",
        tags=["runs"],
    )
    def post(self, request: Request) -> Response:
        """A new ticket."""
        ticket = ws_ticket_issue(tenant=self.tenant)
        return Response(WsTicketSerializer(ticket).data, status=status.HTTP_201_CREATED)
