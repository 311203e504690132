"""Runs of agents: chat sessions and their messages, runs with status and usage, and each run's event log."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from agents.models import BundleVersion
from organizations.models import PUBLIC_ID_ALPHABET, Organization

SESSION_ID_LENGTH = 20


def new_session_public_id() -> str:
    """A non-enumerable session id such as `ses_3k9x…` for sessions the client did not name.

    The same alphabet, length and uniform distribution as `random_token(20)`, drawn as one
    number below 36**20 (one read of the system's randomness instead of twenty: every chat
    run without a session makes one).
    """
    base = len(PUBLIC_ID_ALPHABET)
    number = secrets.randbelow(base**SESSION_ID_LENGTH)
    characters = []
    for _ in range(SESSION_ID_LENGTH):
        number, digit = divmod(number, base)
        characters.append(PUBLIC_ID_ALPHABET[digit])
    return "ses_" + "".join(characters)


class ChatSession(models.Model):
    """A conversation of an end user with one agent; its messages are the history the model sees."""

    # A foreign key whose column leads a composite index or unique constraint has no index of its
    # own (here and below): the composite serves its lookups and cascades, every insert maintains one
    # index less, and PostgreSQL without statistics for the table (new, or grown since autovacuum's
    # last ANALYZE) cannot pick the one-column index and filter the organization's every row instead
    # (measured: a chat turn's two session lookups read 3,178 rows of a 1,839-session table).
    organization = models.ForeignKey(  # indexed by `chatsession_unique_public_id`
        Organization, on_delete=models.CASCADE, related_name="chat_sessions", db_index=False
    )
    # "bundle-slug/agentKey": kept as text so a session outlives bundle versions.
    agent = models.CharField(max_length=200)
    # Client-chosen (AI SDK useChat sends its chat id) or generated; unique per organization.
    public_id = models.CharField(max_length=200, default=new_session_public_id)
    resource_id = models.CharField(
        max_length=200, blank=True, help_text="Passed to tools as context.resourceId."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-updated_at", "-pk"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "public_id"], name="chatsession_unique_public_id")
        ]

    def __str__(self) -> str:
        return f"{self.public_id} ({self.agent})"


class MessageRole(models.TextChoices):
    USER = "user", "User"
    ASSISTANT = "assistant", "Assistant"
    SYSTEM = "system", "System"


class Message(models.Model):
    """One message of a session, as AI SDK UI message parts (`text`, `step-start`, `tool-<name>`)."""

    session = models.ForeignKey(  # indexed by `message_session_created`
        ChatSession, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    public_id = models.CharField(max_length=64, default="", blank=True)
    role = models.CharField(max_length=10, choices=MessageRole.choices)
    parts = models.JSONField(default=list)
    # The run this message started (user) or that wrote it (assistant).
    run = models.ForeignKey("Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="messages")
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [models.Index(fields=["session", "created_at"], name="message_session_created")]

    def __str__(self) -> str:
        return f"{self.role} message in {self.session_id}"

    def text(self) -> str:
        """The concatenated text parts."""
        return "".join(part.get("text", "") for part in self.parts if part.get("type") == "text")


class RunKind(models.TextChoices):
    CHAT = "chat", "Chat (agent loop)"
    TOOL = "tool", "Tool call"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


TERMINAL_STATUSES: frozenset[str] = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT}
)


class Run(models.Model):
    """One execution of an agent (chat) or of one tool, from queued to a terminal status."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(  # indexed by `run_org_created` and `run_org_status`
        Organization, on_delete=models.CASCADE, related_name="runs", db_index=False
    )
    # RESTRICT: a version with runs cannot be deleted on its own (bundles are soft-deleted, so past
    # runs stay readable), yet deleting the whole organization still cascades through both.
    bundle_version = models.ForeignKey(BundleVersion, on_delete=models.RESTRICT, related_name="runs")
    agent_key = models.CharField(max_length=200)
    session = models.ForeignKey(
        ChatSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    kind = models.CharField(max_length=10, choices=RunKind.choices, default=RunKind.CHAT)
    # kind=tool: {"tool": name, "input": {...}}; kind=chat: {} (the input is the session's last message).
    input = models.JSONField(default=dict, blank=True)
    output = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.QUEUED)
    error_type = models.CharField(max_length=40, blank=True)
    error_message = models.TextField(blank=True)

    # --- usage -----------------------------------------------------------------
    model = models.CharField(max_length=200, blank=True, help_text="The provider model that answered.")
    input_tokens = models.PositiveBigIntegerField(default=0)
    output_tokens = models.PositiveBigIntegerField(default=0)
    sandbox_cpu_ms = models.PositiveBigIntegerField(default=0)
    wall_ms = models.PositiveBigIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)

    # --- execution bookkeeping ----------------------------------------------------
    wall_limit_ms = models.PositiveIntegerField(default=300_000)
    backend = models.CharField(max_length=20, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    # Seq of the newest RunEvent; incremented in the same transaction that inserts events.
    last_seq = models.PositiveIntegerField(default=0)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # When `execute_run` was last sent for this run, and how often the reaper sent it again
    # because no worker claimed it (its task was lost).
    enqueued_at = models.DateTimeField(default=timezone.now)
    requeue_count = models.PositiveSmallIntegerField(default=0)
    # How many times a worker claimed the run: 1 for a run that ran once, more when the reaper retried
    # it after its worker was lost. Every write of a claimed run is conditional on its attempt, so a
    # worker that lost the run (stalled, not dead) cannot write into the next attempt.
    attempt = models.PositiveSmallIntegerField(default=0)
    # Written every few seconds by the worker process that holds the run; the reaper fails
    # running runs whose heartbeat went stale (their worker died).
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="run_org_created"),
            models.Index(fields=["organization", "status"], name="run_org_status"),
            models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat"),
            models.Index(fields=["status", "enqueued_at"], name="run_status_enqueued"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        """True once the run can no longer change status."""
        return self.status in TERMINAL_STATUSES

    @property
    def group_name(self) -> str:
        """The channel-layer group that is notified of this run's events."""
        return run_group_name(self.pk)

    def usage(self) -> dict[str, Any]:
        """Usage as the API and the `data-usage` event show it."""
        return {
            "model": self.model,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "sandboxCpuMs": self.sandbox_cpu_ms,
            "wallMs": self.wall_ms,
            "toolCalls": self.tool_calls,
            "steps": self.steps,
        }

    def error_dict(self) -> dict[str, str] | None:
        """The run's error in the API's error shape, or None."""
        if not self.error_type:
            return None
        return {"type": self.error_type, "message": self.error_message}


def run_message_id(run_id: uuid.UUID | str) -> str:
    """The id of the assistant message a chat run writes (its `start` chunk's `messageId`)."""
    return f"msg_{uuid.UUID(str(run_id)).hex}"


def run_group_name(run_id: uuid.UUID | str) -> str:
    """Channel-layer group of a run: `run.<hex id>` (group names allow only [a-zA-Z0-9_.-])."""
    return f"run.{uuid.UUID(str(run_id)).hex}"


class RunEvent(models.Model):
    """One streamed event of a run; `seq` counts from 1 without gaps, the database is the record of truth."""

    run = models.ForeignKey(  # indexed by `runevent_unique_seq`
        Run, on_delete=models.CASCADE, related_name="events", db_index=False
    )
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    # The AI SDK UI message stream chunk without its "type" key.
    payload = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["run_id", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="runevent_unique_seq")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"

    def chunk(self) -> dict[str, Any]:
        """The AI SDK UI message stream chunk (what SSE sends as `data: <json>`)."""
        return {"type": self.type, **self.payload}

    def frame(self) -> dict[str, Any]:
        """The chunk with its run id and seq (what the websocket sends)."""
        return {"run": str(self.run_id), "seq": self.seq, **self.chunk()}
