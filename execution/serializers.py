"""API shapes of runs, their events, chat sessions and messages, and the requests that start runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from execution.models import ChatSession, Message, Run, RunEvent, RunStatus
from lightfast_cloud.api_input import StrictSerializer


class RunErrorSerializer(serializers.Serializer[Any]):
    """Why a run ended without succeeding (the run's own record: no `detail`)."""

    type = serializers.CharField(help_text="`cancelled`, `timeout`, `provider_auth`, a sandbox error type…")
    message = serializers.CharField(help_text="Human-readable explanation, written by the platform.")


class RunSerializer(serializers.ModelSerializer[Run]):
    """A run with its status, error and usage."""

    agent = serializers.SerializerMethodField(help_text="`bundle/agentKey`.")
    bundle_version = serializers.IntegerField(source="bundle_version.number", read_only=True)
    session = serializers.SerializerMethodField(help_text="Public id of the chat session, or null.")
    error = serializers.SerializerMethodField()
    usage = serializers.SerializerMethodField()
    attempt = serializers.IntegerField(
        read_only=True,
        help_text="How many times a worker started the run: 0 while first queued, 1 normally, more when "
        "it was retried after its worker was lost before any tool call.",
    )

    class Meta:
        model = Run
        fields = [
            "id",
            "agent",
            "bundle_version",
            "kind",
            "status",
            "attempt",
            "session",
            "error",
            "usage",
            "output",
            "last_seq",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_agent(self, run: Run) -> str:
        return f"{run.bundle_version.bundle.slug}/{run.agent_key}"

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_session(self, run: Run) -> str | None:
        return run.session.public_id if run.session is not None else None

    @extend_schema_field(RunErrorSerializer(allow_null=True))
    def get_error(self, run: Run) -> dict[str, str] | None:
        return run.error_dict()

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_usage(self, run: Run) -> dict[str, Any]:
        return run.usage()


class RunStreamsSerializer(serializers.Serializer[Any]):
    """Where to follow a run."""

    events = serializers.CharField(help_text="REST: `GET` with `?after=N`.")
    websocket = serializers.CharField(help_text="Websocket path; send `{type: resume, run, after}`.")
    sse = serializers.CharField(help_text="SSE path; `GET` with `Last-Event-ID: <run>:<seq>`.")


class RunStartedSerializer(RunSerializer):
    """A run just started, with its stream URLs."""

    streams = serializers.SerializerMethodField()

    class Meta(RunSerializer.Meta):
        fields = [*RunSerializer.Meta.fields, "streams"]
        read_only_fields = fields

    @extend_schema_field(RunStreamsSerializer)
    def get_streams(self, run: Run) -> dict[str, str]:
        agent = self.get_agent(run)
        return {
            "events": f"/api/v1/runs/{run.pk}/events",
            "websocket": f"/ws/v1/chat/{agent}/",
            "sse": f"/api/v1/chat/{agent}",
        }


class RunCreateSerializer(StrictSerializer):
    """Start a chat run: `agent` and either `input` text or `messages`."""

    agent = serializers.CharField(max_length=401, help_text="`bundle/agentKey`.")
    input = serializers.CharField(required=False, trim_whitespace=False, help_text="The user's message.")
    messages = serializers.ListField(
        child=serializers.JSONField(),
        required=False,
        help_text="AI SDK UI messages (or `{role, content}`); the last one is the user's turn.",
    )
    session = serializers.CharField(required=False, max_length=200, help_text="Chat session id to continue.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("input" in attrs) == ("messages" in attrs):
            raise serializers.ValidationError("Send exactly one of `input` and `messages`.")
        return attrs


class RunEventSerializer(serializers.Serializer[Any]):
    """One event: seq plus the AI SDK UI message stream chunk (`type` and its fields)."""

    seq = serializers.IntegerField()
    type = serializers.CharField()
    created_at = serializers.DateTimeField()
    chunk = serializers.JSONField(help_text="The chunk exactly as SSE sends it.")


class RunEventsSerializer(serializers.Serializer[Any]):
    """A page of a run's events."""

    run = serializers.UUIDField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    events = RunEventSerializer(many=True)
    last_seq = serializers.IntegerField(help_text="Seq of the last event in this page (or `after`).")
    done = serializers.BooleanField(
        help_text="True when the run has ended and no events remain after this page."
    )


# The field that formats an event's time, as RunEventSerializer's `created_at` does.
_EVENT_TIME = serializers.DateTimeField()


def run_events_page(run: Run, events: Sequence[RunEvent], *, last_seq: int, done: bool) -> dict[str, Any]:
    """What RunEventsSerializer (the page's schema) makes of a page of events, built directly.

    A page holds up to 500 events, and the serializer's per-field machinery cost more than reading
    them. Each value is what that serializer's field gives (the times through its DateTimeField);
    tests/execution/test_runs_api.py holds the two equal.
    """
    created = _EVENT_TIME.to_representation
    return {
        "run": str(run.pk),
        "status": run.status,
        "events": [
            {
                "seq": event.seq,
                "type": event.type,
                "created_at": created(event.created_at),
                "chunk": event.chunk(),
            }
            for event in events
        ],
        "last_seq": last_seq,
        "done": done,
    }


class ChatSessionSerializer(serializers.ModelSerializer[ChatSession]):
    """A chat session."""

    id = serializers.CharField(source="public_id", read_only=True)

    class Meta:
        model = ChatSession
        fields = ["id", "agent", "resource_id", "created_at", "updated_at"]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer[Message]):
    """A message as AI SDK UI message parts."""

    id = serializers.CharField(source="public_id", read_only=True)
    run = serializers.UUIDField(source="run_id", read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = ["id", "role", "parts", "run", "created_at"]
        read_only_fields = fields


class ClientTokenCreateSerializer(StrictSerializer):
    """Input for minting a client token."""

    bundle = serializers.CharField(max_length=200, help_text="The bundle's slug.")
    agent = serializers.CharField(max_length=200, help_text="The agent's key in the bundle.")
    ttl_seconds = serializers.IntegerField(
        required=False, min_value=10, max_value=3600, default=600, help_text="Lifetime, 10 s to 1 h."
    )


class ClientTokenSerializer(serializers.Serializer[Any]):
    """A client token for a browser: the chat endpoints of one agent, until it expires."""

    token = serializers.CharField(
        help_text="Send as `Authorization: Bearer …` (or `?token=`) to `/api/v1/chat/{bundle}/{agent}`, "
        "or offer `lightfast.key.<token>` beside `lightfast.v1` as websocket subprotocols."
    )
    expires_at = serializers.DateTimeField()
    bundle = serializers.CharField()
    agent = serializers.CharField()


class WsTicketSerializer(serializers.Serializer[Any]):
    """A single-use websocket ticket."""

    ticket = serializers.CharField(help_text="Connect with `?ticket=`; works once.")
    expires_at = serializers.DateTimeField()
