"""Executing a claimed run (the Celery task `execute_run` calls `run_execute`): claim, drive the agent
loop or the tool call under the supervisor, and end the run once."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from typing import Any

from django.utils import timezone

from agents.models import BundleVersion
from execution.agent_loop import (
    AssistantTurn,
    RunCancelled,
    Usage,
    agent_loop_run,
    run_tool_call,
)
from execution.events import PreparedRunUpdate, run_update_prepare, run_update_with_events
from execution.models import (
    ChatSession,
    Message,
    MessageRole,
    Run,
    RunKind,
    RunStatus,
    run_message_id,
)
from execution.providers.base import CancelToken, ProviderError, ToolCall
from execution.sandbox.errors import SandboxError
from execution.services.messages import PreparedMessage, chat_session_lock_of
from execution.services.runs import run_status_event
from execution.supervision import CANCELLED, TIMEOUT, WORKER_LOST, supervisor
from execution.write_gate import TRANSIENT_DATABASE_ERRORS, DatabaseRetries, read_retrying, write_transaction
from lightfast_cloud import sql
from lightfast_cloud.errors import error_text
from organizations.models import Organization
from organizations.quotas import (
    quota_run_released,
)

logger = logging.getLogger(__name__)

# Error types a run can end with besides the sandbox taxonomy and the provider_* types.
WORKER_LOST_ERROR = "worker_lost"
INTERNAL_ERROR = "internal_error"
DATABASE_UNAVAILABLE_ERROR = "database_unavailable"

# What the worker reads of a run, its organization, version and session: the claim returns
# the run's columns, one SELECT the others (fresh for every run, so a suspension or a
# quarantine committed before the claim is seen by it). Everything else stays deferred.
CLAIM_FIELDS = (
    "id",
    "organization",
    "bundle_version",
    "agent_key",
    "session",
    "kind",
    "input",
    "wall_limit_ms",
    "created_at",
    "attempt",
)
ORGANIZATION_FIELDS = (
    "id",
    "public_id",
    "slug",
    "is_active",
    "run_cpu_ms",
    "run_memory_bytes",
    "run_wall_ms",
    "sandbox_backend",
)
VERSION_FIELDS = (
    "id",
    "organization",
    "bundle",
    "number",
    "sha256",
    "size_bytes",
    "script_file",
    "source_map_file",
    "imports",
    "manifest",
    "status",
)
SESSION_FIELDS = ("id", "public_id", "resource_id")
# A run whose organization was suspended after it was queued ends `cancelled` with this reason.
SUSPENDED = "organization_suspended"


def run_execute(*, run_id: uuid.UUID | str, worker: str = "", message_id: str | None = None) -> bool:
    """Claim a queued run and drive it to a terminal status; False when it was not queued (redelivery).

    `message_id`: the assistant message the run writes, when it continues one (`run_enqueue`
    passes it); else the run's own (`run_message_id`).
    """
    now = timezone.now()
    message_id = message_id or run_message_id(run_id)
    # The claim and the first events are one statement and one commit until the client sees `start`,
    # whose message metadata names the run (a client cancels or resumes with it).
    start = {"messageId": message_id, "messageMetadata": {"runId": str(uuid.UUID(str(run_id)))}}
    claimed = run_update_with_events(
        run_id,
        [("start", start), run_status_event(RunStatus.RUNNING)],
        status=RunStatus.QUEUED,
        changes={"status": RunStatus.RUNNING, "started_at": now, "heartbeat_at": now, "worker": worker[:200]},
        # The attempt this claim starts: every later write of this worker is conditional on it.
        increments={"attempt": 1},
        returning=CLAIM_FIELDS,
    )
    if claimed is None:
        return False
    run = sql.instance(Run, CLAIM_FIELDS, claimed.returned)
    run.status, run.started_at, run.heartbeat_at, run.last_seq = RunStatus.RUNNING, now, now, claimed.last_seq
    read_retrying(f"run {run.pk}: reading its version", functools.partial(_run_load_related, run))
    turn = AssistantTurn(run, message_id=message_id)
    usage = Usage()
    started = time.monotonic()
    status: str = RunStatus.SUCCEEDED
    error: tuple[str, str] | None = None
    output: Any = None
    finish_reason = "stop"
    continued = isinstance(run.input, dict) and bool(run.input.get("continue"))
    if continued and run.input["continue"] != message_id:
        # Its task did not name the message (sent by hand?): the stream's `start` named another one.
        logger.warning("run %s continues %s but streamed %s", run.pk, run.input["continue"], message_id)
        turn.message_id = str(run.input["continue"])
    with supervisor.hold(run.pk, attempt=run.attempt, wall_limit_s=run.wall_limit_ms / 1000) as cancel:
        try:
            if not run.organization.is_active:
                raise RunCancelled(SUSPENDED)
            if not run.bundle_version.is_runnable:
                raise SandboxError(
                    "invalid_bundle",
                    f"Version {run.bundle_version.number} is {run.bundle_version.status} and cannot run.",
                )
            if run.kind == RunKind.TOOL:
                output = _execute_tool_run(run=run, turn=turn, cancel=cancel, usage=usage)
            else:
                result = agent_loop_run(run=run, turn=turn, cancel=cancel, usage=usage)
                output, finish_reason = {"text": result.text}, result.finish_reason
                if result.pending:
                    # What the answer waits for; a continuation is checked against it (chat_tools).
                    output["pendingToolCalls"] = result.pending
        except RunCancelled as exc:
            if exc.reason == TIMEOUT:
                status, error = (
                    RunStatus.TIMED_OUT,
                    ("timeout", f"The run exceeded its wall limit of {run.wall_limit_ms} ms."),
                )
            elif exc.reason == WORKER_LOST:
                # The reaper already ended or re-queued the run; the conditional finish below writes nothing.
                status, error = RunStatus.FAILED, (WORKER_LOST_ERROR, "The run was taken back by the reaper.")
            elif exc.reason == SUSPENDED:
                status, error = RunStatus.CANCELLED, (CANCELLED, "The organization is suspended.")
            else:
                status, error = RunStatus.CANCELLED, (CANCELLED, "The run was cancelled.")
        except ProviderError as exc:
            status, error = RunStatus.FAILED, (exc.code, exc.message)
        except SandboxError as exc:
            status, error = RunStatus.FAILED, (exc.code, exc.message)
        except TRANSIENT_DATABASE_ERRORS as exc:
            logger.warning("run %s: the database was unreachable: %s", run.pk, exc)
            error = (DATABASE_UNAVAILABLE_ERROR, "The database could not be reached.")
            status = RunStatus.FAILED
        except Exception as exc:  # noqa: BLE001 - the run must end with an error, whatever broke
            logger.exception("run %s failed unexpectedly", run.pk)
            status, error = RunStatus.FAILED, (INTERNAL_ERROR, f"Internal error: {type(exc).__name__}")
    _run_finish(
        run=run,
        turn=turn,
        status=status,
        error=error,
        usage=usage,
        output=output,
        wall_ms=int((time.monotonic() - started) * 1000),
        finish_reason=finish_reason,
        continued=continued,
    )
    return True


def _run_load_related(run: Run) -> None:
    """Attach the run's organization, version and session, read with one SELECT (always fresh)."""
    row = sql.fetch_one(
        _related_sql(sql.vendor()), [run.bundle_version_id, run.session_id, run.organization_id]
    )
    if row is None:
        raise Run.DoesNotExist(f"run {run.pk}: its organization or version is gone")
    split = len(ORGANIZATION_FIELDS)
    organization = sql.instance(Organization, ORGANIZATION_FIELDS, row[:split])
    version = sql.instance(BundleVersion, VERSION_FIELDS, row[split : split + len(VERSION_FIELDS)])
    run.organization = organization
    if version.organization_id == organization.pk:
        # run_start only pairs a run with its own organization's versions; sharing the loaded row
        # saves the query the sandbox cache key (version_bundle_key) would make for it.
        version.organization = organization
    run.bundle_version = version
    if run.session_id is not None:
        run.session = sql.instance(ChatSession, SESSION_FIELDS, row[split + len(VERSION_FIELDS) :])


@functools.cache
def _related_sql(vendor: str) -> str:
    version_id = sql.column(BundleVersion, "id")
    session_id = sql.column(ChatSession, "id")
    # Identifiers from model metadata; the ids are parameters.
    return (
        f"SELECT {sql.select_columns(Organization, ORGANIZATION_FIELDS, 'o')},"  # noqa: S608
        f" {sql.select_columns(BundleVersion, VERSION_FIELDS, 'v')},"
        f" {sql.select_columns(ChatSession, SESSION_FIELDS, 's')}"
        f" FROM {sql.table(Organization)} o"
        f" INNER JOIN {sql.table(BundleVersion)} v ON v.{version_id} = %s"
        f" LEFT JOIN {sql.table(ChatSession)} s ON s.{session_id} = %s"
        f" WHERE o.{sql.column(Organization, 'id')} = %s"
    )


def _execute_tool_run(*, run: Run, turn: AssistantTurn, cancel: CancelToken, usage: Usage) -> Any:
    """A `tool` run: one sandbox call, streamed as one tool call of one step."""
    tool = str(run.input.get("tool"))
    call = ToolCall(id=f"call_{run.pk.hex[:12]}", name=tool, arguments="")
    usage.steps = 1
    turn.start_step()
    part = turn.tool_input(call, run.input.get("input"))
    turn.flush()
    context = {"sessionId": str(run.pk), "resourceId": run.organization.public_id}
    result = run_tool_call(
        run=run, tool=tool, tool_input=run.input.get("input"), context=context, cancel=cancel
    )
    usage.add_sandbox(result.usage)
    if cancel.cancelled:
        raise RunCancelled(cancel.reason)
    if result.logs:
        agent = run.bundle_version.agent(run.agent_key)
        turn.stream_logs = agent is not None and agent.stream_logs
        turn.log(call.id, result.logs)
    if not result.ok:
        error = result.error or {}
        turn.tool_error(part, f"{error.get('type')}: {error.get('message')}")
        turn.finish_step()
        raise SandboxError.from_dict(error)
    turn.tool_output(part, result.output)
    turn.finish_step()
    return result.output


# Provider finish reasons (chat completions) -> the AI SDK's `finishReason`.
FINISH_REASONS = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
    "tool-calls": "tool-calls",
    "content-filter": "content-filter",
}


def _answer_discarded(run: Run) -> bool:
    """True when a later turn of the chat truncated this run's answer away (`chat_run_start`)."""
    if run.status != RunStatus.CANCELLED:
        return False
    current = Run.objects.filter(pk=run.pk).values_list("input", flat=True).first()
    return bool(isinstance(current, dict) and current.get("discardAnswer"))


def _answer_replaced(run: Run, parts: list[dict[str, Any]], message_id: str) -> bool:
    """A cancelled run whose partial answer a later turn already imported from the client: the
    stored copy takes the run's own record of the parts (True), else the answer is inserted."""
    if run.status != RunStatus.CANCELLED:
        return False
    return bool(Message.objects.filter(session_id=run.session_id, public_id=message_id).update(parts=parts))


def _run_finish(
    *,
    run: Run,
    turn: AssistantTurn,
    status: str,
    error: tuple[str, str] | None,
    usage: Usage,
    output: Any,
    wall_ms: int,
    finish_reason: str = "stop",
    continued: bool = False,
) -> None:
    """End a running run once: status, usage, the assistant message, the terminal events and the slot.

    One transaction whose first statement is the conditional status update (which also reserves
    the events' seqs) and whose last are the quota rows in their fixed order (see
    organizations.quotas), so it cannot deadlock with run starts or other endings.
    """
    parts = turn.message_parts()
    run.status, run.model, run.wall_ms, run.steps = status, usage.model[:200], wall_ms, usage.steps
    run.input_tokens, run.output_tokens = usage.input_tokens, usage.output_tokens
    run.sandbox_cpu_ms, run.tool_calls = usage.sandbox_cpu_ms, usage.tool_calls
    if status == RunStatus.CANCELLED:
        turn.close_step()  # a cancelled run's open text and step are closed before `abort`
    events: list[tuple[str, dict[str, Any]]] = turn.take_pending()
    if error is not None and status != RunStatus.CANCELLED:
        events.append(("error", {"errorText": error_text(*error)}))
    # Transient: the usage reaches live clients but never becomes a part of the stored message.
    events.append(("data-usage", {"data": run.usage(), "transient": True}))
    if status == RunStatus.SUCCEEDED:
        events.append(("finish", {"finishReason": FINISH_REASONS.get(finish_reason, "other")}))
    elif status == RunStatus.CANCELLED:
        events.append(("abort", {}))
    events.append(run_status_event(status, error))
    # Built before the transaction, which then only runs the statements.
    update = run_update_prepare(
        run,
        events,
        status=RunStatus.RUNNING,
        attempt=run.attempt,
        changes={
            "status": status,
            "error_type": error[0] if error else "",
            "error_message": error[1] if error else "",
            "finished_at": timezone.now(),
            "output": output,
            "model": usage.model[:200],
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "sandbox_cpu_ms": usage.sandbox_cpu_ms,
            "wall_ms": wall_ms,
            "tool_calls": usage.tool_calls,
            "steps": usage.steps,
        },
    )
    # The database may be away for a moment (a restart, a failover): the ending is tried again until
    # it answers. A try whose commit went unconfirmed is harmless to repeat: the update is
    # conditional on the run still running this attempt, so the second one matches nothing.
    retries: DatabaseRetries | None = None
    while True:
        try:
            _run_finish_commit(
                run=run, turn=turn, parts=parts, update=update, usage=usage, continued=continued
            )
            return
        except TRANSIENT_DATABASE_ERRORS as exc:
            retries = retries or DatabaseRetries(f"run {run.pk}: ending")
            retries.wait(exc)


def _run_finish_commit(
    *,
    run: Run,
    turn: AssistantTurn,
    parts: list[dict[str, Any]],
    update: PreparedRunUpdate,
    usage: Usage,
    continued: bool,
) -> None:
    """`_run_finish`'s transaction: the run's terminal update and events, its answer, its slot."""
    # Stamped with the run's start, so the answer follows its own question in the history even
    # when a later turn was written first; dropped when a later turn truncated it away. A run that
    # continued an answer (client tool results, approvals) writes that message's parts in place.
    session = run.session if parts else None  # a chat run with an answer to write
    message = (
        PreparedMessage(
            session=session,
            role=MessageRole.ASSISTANT,
            parts=parts,
            run=run,
            public_id=turn.message_id,
            created_at=run.created_at,
        )
        if session is not None and not continued
        else None
    )
    with write_transaction():
        if session is not None:
            # Serial with the chat's turn starts, which import or drop this answer (on PostgreSQL
            # the chat's advisory lock, taken first, as the turn starts take it): an answer a turn
            # imported from the client meanwhile is then found and updated, never inserted twice.
            chat_session_lock_of(organization_id=run.organization_id, public_id=session.public_id)
        if update.execute() is None:
            # The reaper ended it (or re-queued it for another attempt) first and wrote its own
            # events; nothing of this attempt may follow them.
            return
        if session is not None and not _answer_discarded(run):
            if continued:
                # (No parts: the run ended before it read the answer, which then stays as it was.)
                Message.objects.filter(session_id=run.session_id, public_id=turn.message_id).update(
                    parts=parts
                )
            elif message is not None and not _answer_replaced(run, parts, turn.message_id):
                message.execute()
        # Last, so the organization's hot counter rows stay locked only until the commit.
        quota_run_released(
            organization_id=run.organization_id,
            sandbox_cpu_ms=usage.sandbox_cpu_ms,
            model_tokens=usage.input_tokens + usage.output_tokens,
        )
