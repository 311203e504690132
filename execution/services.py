"""Writes for runs: sessions and messages, starting, executing, cancelling and reaping runs.

Transports (websocket, SSE, REST) call `run_start` and `run_cancel`, read events with
`execution.events.run_events_after`, and subscribe to `run.group_name` (see
`execution.events` for the delivery contract). The Celery task `execute_run` calls
`run_execute`; beat calls `run_reap_lost` and `run_reap_queued`.

Run lifecycle: `queued` → (claimed by exactly one worker with a conditional UPDATE)
`running` → `succeeded` | `failed` | `cancelled` | `timed_out`; `queued` → `cancelled`
directly when cancelled before a worker claimed it. Every status change away from
`running` is a conditional UPDATE too, so a run ends exactly once and writes its
terminal events exactly once.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from agents.models import BundleVersion
from execution import statements
from execution.agent_loop import AssistantTurn, RunCancelled, Usage, agent_loop_run, new_message_id, tool_call
from execution.events import after_commit, run_update_prepare, run_update_with_events, write_transaction
from execution.models import ChatSession, Message, MessageRole, Run, RunKind, RunStatus
from execution.providers.base import CancelToken, ProviderError, ToolCall
from execution.sandbox.errors import SandboxError
from execution.statements import insert_row
from execution.supervision import CANCELLED, TIMEOUT, WORKER_LOST, supervisor
from organizations.models import Organization
from organizations.quotas import effective_run_limit, quota_run_ended, quota_run_released, quota_run_started

logger = logging.getLogger(__name__)

# Error types a run can end with besides the sandbox taxonomy and the provider_* types.
WORKER_LOST_ERROR = "worker_lost"
INTERNAL_ERROR = "internal_error"
# Celery's limits sit above the run's own wall limit (enforced by the supervisor), so they only
# fire if the orchestration itself hangs (prefork pools; the threads pool cannot enforce them).
TASK_SOFT_LIMIT_MARGIN_S = 30
TASK_HARD_LIMIT_MARGIN_S = 60


class RunNotStartable(Exception):
    """The run cannot start: carries a taxonomy code (`invalid_bundle`, `unknown_tool`, `invalid_input`)."""

    def __init__(self, code: str, message: str, *, detail: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.detail = detail or {}


# --- sessions and messages -------------------------------------------------------------------


def chat_session_get_or_create(
    *,
    organization: Organization,
    agent: str,
    public_id: str | None = None,
    resource_id: str = "",
    created_by: Any = None,
) -> ChatSession:
    """The organization's session with this public id, created for `agent` ("bundle/agentKey") if new."""
    if public_id:
        session, _ = ChatSession.objects.get_or_create(
            organization=organization,
            public_id=public_id,
            defaults={"agent": agent, "resource_id": resource_id, "created_by": created_by},
        )
        return session
    return insert_row(
        ChatSession(organization=organization, agent=agent, resource_id=resource_id, created_by=created_by)
    )


def message_create(
    *,
    session: ChatSession,
    role: str,
    parts: list[dict[str, Any]],
    run: Run | None = None,
    public_id: str = "",
    session_is_new: bool = False,
) -> Message:
    """Append a message (AI SDK UI parts) to a session (`session_is_new`: created just now, no bump)."""
    prepared = PreparedMessage(
        session=session, role=role, parts=parts, run=run, public_id=public_id, session_is_new=session_is_new
    )
    return prepared.execute()


class PreparedMessage:
    """`message_create` with its statements built ahead of the (write) transaction that runs them."""

    def __init__(
        self,
        *,
        session: ChatSession,
        role: str,
        parts: list[dict[str, Any]],
        run: Run | None = None,
        public_id: str = "",
        session_is_new: bool = False,
    ) -> None:
        now = timezone.now()
        self.message = Message(
            session=session,
            role=role,
            parts=parts,
            run=run,
            public_id=public_id or f"msg_{uuid.uuid4().hex}",
            created_at=now,
        )
        self.insert = statements.insert(self.message)
        self.bump = (
            None
            if session_is_new
            else statements.update(ChatSession, session.pk, changes={"updated_at": now})
        )

    def session_saved(self, session: ChatSession) -> None:
        """The session was inserted after this was prepared (same transaction): take its primary key."""
        self.message.session = session
        self.insert.refresh("session")

    def execute(self) -> Message:
        """Insert the message and bump its session."""
        self.insert.execute()
        if self.bump is not None:
            self.bump.execute()
        return self.message


def text_parts(text: str) -> list[dict[str, Any]]:
    """UI message parts for a plain text message."""
    return [{"type": "text", "text": text}]


# --- starting and cancelling -----------------------------------------------------------------


def _check_startable(
    *, organization: Organization, version: BundleVersion, agent_key: str, tool: str | None
) -> dict[str, Any]:
    if version.organization_id != organization.pk:
        # Never reveal another organization's versions: same answer as an unknown one.
        raise RunNotStartable("invalid_bundle", "No such bundle version.")
    if not version.is_runnable:
        raise RunNotStartable(
            "invalid_bundle",
            f"Version {version.number} is {version.status} and cannot run.",
            detail={"status": version.status},
        )
    agents = (version.manifest or {}).get("agents") or {}
    spec = agents.get(agent_key)
    if spec is None:
        raise RunNotStartable(
            "invalid_input",
            f"The bundle has no agent {agent_key!r}.",
            detail={"agent": agent_key, "agents": sorted(agents)},
        )
    if tool is not None and tool not in (spec.get("tools") or {}) and not spec.get("dynamicTools"):
        raise RunNotStartable(
            "unknown_tool",
            f"Agent {agent_key!r} has no tool {tool!r}.",
            detail={"tool": tool, "tools": sorted(spec.get("tools") or {})},
        )
    return dict(spec)


def run_start(
    *,
    organization: Organization,
    bundle_version: BundleVersion,
    agent_key: str,
    session: ChatSession | None = None,
    text: str | None = None,
    parts: list[dict[str, Any]] | None = None,
    tool: str | None = None,
    tool_input: Any = None,
    created_by: Any = None,
) -> Run:
    """Create a queued run and enqueue `execute_run` once the transaction commits.

    Chat runs (no `tool`) append the user's message (`text` or UI `parts`) to `session`
    (a new session when None) and answer it with the agent loop. Tool runs (`tool` and
    `tool_input`) call one tool of the agent in the sandbox.
    """
    _check_startable(organization=organization, version=bundle_version, agent_key=agent_key, tool=tool)
    kind = RunKind.TOOL if tool is not None else RunKind.CHAT
    if kind == RunKind.CHAT:
        parts = parts if parts is not None else text_parts(text or "")
        if not any(part.get("type") == "text" and str(part.get("text", "")).strip() for part in parts):
            raise RunNotStartable("invalid_input", "The message has no text.")
    # Rows and statements are built first: inside the transaction (on SQLite, while every other
    # writer waits) only the statements run.
    new_session: statements.Insert | None = None
    if kind == RunKind.CHAT and session is None:
        session = ChatSession(
            organization=organization,
            agent=f"{bundle_version.bundle.slug}/{agent_key}",
            created_by=created_by,
        )
        new_session = statements.insert(session)
    run = Run(
        organization=organization,
        bundle_version=bundle_version,
        agent_key=agent_key,
        session=session,
        kind=kind,
        input={"tool": tool, "input": tool_input} if kind == RunKind.TOOL else {},
        wall_limit_ms=effective_run_limit(organization=organization, field="run_wall_ms"),
        created_by=created_by,
        backend=settings.LIGHTFAST_SANDBOX_BACKEND,
    )
    run_insert = statements.insert(run)
    message = (
        PreparedMessage(
            session=session,
            role=MessageRole.USER,
            parts=list(parts or []),
            run=run,
            session_is_new=new_session is not None,
        )
        if kind == RunKind.CHAT and session is not None
        else None
    )
    with write_transaction():
        if new_session is not None:
            assert session is not None and message is not None
            new_session.execute()
            run.session = session
            run_insert.refresh("session")
            message.session_saved(session)
        run_insert.execute()
        if message is not None:
            message.execute()
        # Raises QuotaExceeded (403 quota_exceeded), rolling the rows above back (this
        # transaction, or the savepoint of a caller's, ends with it: no savepoint of its own).
        # Last, so the organization's counter rows (hot: every start and end takes them) stay
        # locked only until the commit that follows.
        quota_run_started(organization=organization, savepoint=False)
        after_commit(lambda: _enqueue(run))
    return run


def _enqueue(run: Run) -> None:
    from execution.tasks import execute_run

    wall_s = run.wall_limit_ms / 1000
    execute_run.apply_async(
        args=[str(run.pk)],
        soft_time_limit=wall_s + TASK_SOFT_LIMIT_MARGIN_S,
        time_limit=wall_s + TASK_HARD_LIMIT_MARGIN_S,
    )


def run_cancel(*, run: Run) -> Run:
    """Cancel a run: a queued run ends `cancelled` now; a running one within a second (its worker stops)."""
    now = timezone.now()
    with write_transaction():
        ended = run_update_with_events(
            run,
            [_status_event(RunStatus.CANCELLED)],
            status=RunStatus.QUEUED,
            changes={
                "status": RunStatus.CANCELLED,
                "cancel_requested_at": now,
                "finished_at": now,
                "error_type": CANCELLED,
                "error_message": "The run was cancelled before it started.",
            },
        )
        if ended is not None:
            # A queued run has used nothing yet: only its slot comes back.
            quota_run_released(organization_id=run.organization_id, sandbox_cpu_ms=0, model_tokens=0)
        else:
            Run.objects.filter(pk=run.pk, status=RunStatus.RUNNING, cancel_requested_at__isnull=True).update(
                cancel_requested_at=now
            )
    run.refresh_from_db()
    return run


# --- executing (called by the Celery task) ---------------------------------------------------


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


def run_execute(*, run_id: uuid.UUID | str, worker: str = "") -> bool:
    """Claim a queued run and drive it to a terminal status; False when it was not queued (redelivery)."""
    now = timezone.now()
    message_id = new_message_id()
    # The claim and the first events are one statement and one commit until the client sees `start`.
    claimed = run_update_with_events(
        run_id,
        [("start", {"messageId": message_id}), _status_event(RunStatus.RUNNING)],
        status=RunStatus.QUEUED,
        changes={"status": RunStatus.RUNNING, "started_at": now, "heartbeat_at": now, "worker": worker[:200]},
        returning=CLAIM_FIELDS,
    )
    if claimed is None:
        return False
    run = statements.instance(Run, CLAIM_FIELDS, claimed.returned)
    run.status, run.started_at, run.heartbeat_at, run.last_seq = RunStatus.RUNNING, now, now, claimed.last_seq
    _run_load_related(run)
    turn = AssistantTurn(run, message_id=message_id)
    usage = Usage()
    started = time.monotonic()
    status: str = RunStatus.SUCCEEDED
    error: tuple[str, str] | None = None
    output: Any = None
    with supervisor.hold(run.pk, wall_limit_s=run.wall_limit_ms / 1000) as cancel:
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
                output = {"text": agent_loop_run(run=run, turn=turn, cancel=cancel, usage=usage).text}
        except RunCancelled as exc:
            if exc.reason == TIMEOUT:
                status, error = (
                    RunStatus.TIMED_OUT,
                    ("timeout", f"The run exceeded its wall limit of {run.wall_limit_ms} ms."),
                )
            elif exc.reason == WORKER_LOST:
                status, error = RunStatus.FAILED, (WORKER_LOST_ERROR, "The run was ended by the reaper.")
            elif exc.reason == SUSPENDED:
                status, error = RunStatus.CANCELLED, (CANCELLED, "The organization is suspended.")
            else:
                status, error = RunStatus.CANCELLED, (CANCELLED, "The run was cancelled.")
        except ProviderError as exc:
            status, error = RunStatus.FAILED, (exc.code, exc.message)
        except SandboxError as exc:
            status, error = RunStatus.FAILED, (exc.code, exc.message)
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
    )
    return True


def _run_load_related(run: Run) -> None:
    """Attach the run's organization, version and session, read with one SELECT (always fresh)."""
    with statements.database().cursor() as cursor:
        cursor.execute(
            _related_sql(statements.vendor()), [run.bundle_version_id, run.session_id, run.organization_id]
        )
        row = cursor.fetchone()
    if row is None:
        raise Run.DoesNotExist(f"run {run.pk}: its organization or version is gone")
    split = len(ORGANIZATION_FIELDS)
    organization = statements.instance(Organization, ORGANIZATION_FIELDS, row[:split])
    version = statements.instance(BundleVersion, VERSION_FIELDS, row[split : split + len(VERSION_FIELDS)])
    run.organization = organization
    if version.organization_id == organization.pk:
        # run_start only pairs a run with its own organization's versions; sharing the loaded row
        # saves the query the sandbox cache key (version_bundle_key) would make for it.
        version.organization = organization
    run.bundle_version = version
    if run.session_id is not None:
        run.session = statements.instance(ChatSession, SESSION_FIELDS, row[split + len(VERSION_FIELDS) :])


@functools.cache
def _related_sql(vendor: str) -> str:
    version_id = statements.column(BundleVersion, "id")
    session_id = statements.column(ChatSession, "id")
    # Identifiers from model metadata; the ids are parameters.
    return (
        f"SELECT {statements.select_columns(Organization, ORGANIZATION_FIELDS, 'o')},"  # noqa: S608
        f" {statements.select_columns(BundleVersion, VERSION_FIELDS, 'v')},"
        f" {statements.select_columns(ChatSession, SESSION_FIELDS, 's')}"
        f" FROM {statements.table(Organization)} o"
        f" INNER JOIN {statements.table(BundleVersion)} v ON v.{version_id} = %s"
        f" LEFT JOIN {statements.table(ChatSession)} s ON s.{session_id} = %s"
        f" WHERE o.{statements.column(Organization, 'id')} = %s"
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
    result = tool_call(run=run, tool=tool, tool_input=run.input.get("input"), context=context, cancel=cancel)
    usage.add_sandbox(result.usage)
    if cancel.cancelled:
        raise RunCancelled(cancel.reason)
    if result.logs:
        turn.emit("data-log", {"data": {"toolCallId": call.id, "logs": result.logs}, "transient": True})
    if not result.ok:
        error = result.error or {}
        turn.tool_error(part, f"{error.get('type')}: {error.get('message')}")
        turn.finish_step()
        raise SandboxError.from_dict(error)
    turn.tool_output(part, result.output)
    turn.finish_step()
    return result.output


def _status_event(status: str, error: tuple[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    data: dict[str, Any] = {"status": status}
    if error is not None:
        data["error"] = {"type": error[0], "message": error[1]}
    return ("data-status", {"data": data, "transient": True})


def _run_finish(
    *,
    run: Run,
    turn: AssistantTurn,
    status: str,
    error: tuple[str, str] | None,
    usage: Usage,
    output: Any,
    wall_ms: int,
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
    events: list[tuple[str, dict[str, Any]]] = turn.take_pending()
    if error is not None and status != RunStatus.CANCELLED:
        events.append(("error", {"errorText": f"{error[0]}: {error[1]}"}))
    events.append(("data-usage", {"data": run.usage()}))
    if status in (RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        events.append(("finish", {}))
    events.append(_status_event(status, error))
    # Built before the transaction, which then only runs the statements.
    update = run_update_prepare(
        run,
        events,
        status=RunStatus.RUNNING,
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
    message = (
        PreparedMessage(
            session=run.session, role=MessageRole.ASSISTANT, parts=parts, run=run, public_id=turn.message_id
        )
        if run.session is not None and parts
        else None
    )
    with write_transaction():
        if update.execute() is None:
            # The reaper ended it first and wrote the terminal events; nothing may follow them.
            return
        if message is not None:
            message.execute()
        # Last, so the organization's hot counter rows stay locked only until the commit.
        quota_run_released(
            organization_id=run.organization_id,
            sandbox_cpu_ms=usage.sandbox_cpu_ms,
            model_tokens=usage.input_tokens + usage.output_tokens,
        )


# --- reaping ---------------------------------------------------------------------------------


def run_reap_lost(*, now: datetime | None = None) -> int:
    """Fail running runs whose worker stopped heartbeating (`worker_lost`); returns how many."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.LIGHTFAST_RUN_STALE_S)
    lost = Q(heartbeat_at__lt=stale) | Q(heartbeat_at__isnull=True, started_at__lt=stale)
    count = 0
    for run_id in Run.objects.filter(lost, status=RunStatus.RUNNING).values_list("pk", flat=True):
        message = "The worker running this run stopped (crashed or was killed)."
        if _run_end_with_worker_lost(run_id, Q(lost, status=RunStatus.RUNNING), message, now):
            count += 1
    if count:
        logger.warning("reaped %d run(s) whose worker was lost", count)
    return count


def run_reap_queued(*, now: datetime | None = None) -> dict[str, int]:
    """Re-enqueue queued runs no worker claimed in time; fail those queued too long. Returns both counts.

    A run stays `queued` until a worker claims it, holding a concurrent-run slot; if the broker
    lost its task it would hold the slot forever. Re-enqueueing is safe because the claim is a
    conditional UPDATE (a duplicate task finds the run claimed and does nothing). A run still
    queued LIGHTFAST_RUN_QUEUED_MAX_S after it was created fails with `worker_lost`, its slot
    given back by `quota_run_ended` in the same transaction, like every other terminal update.
    """
    now = now or timezone.now()
    give_up = Q(created_at__lt=now - timedelta(seconds=settings.LIGHTFAST_RUN_QUEUED_MAX_S))
    failed = 0
    for run_id in Run.objects.filter(give_up, status=RunStatus.QUEUED).values_list("pk", flat=True):
        message = (
            f"No worker started the run within {settings.LIGHTFAST_RUN_QUEUED_MAX_S:g} s "
            "(its task was lost or the workers are down)."
        )
        if _run_end_with_worker_lost(run_id, Q(give_up, status=RunStatus.QUEUED), message, now):
            failed += 1
    requeued = 0
    unclaimed = Run.objects.filter(
        status=RunStatus.QUEUED, enqueued_at__lt=now - timedelta(seconds=settings.LIGHTFAST_RUN_REQUEUE_S)
    )
    for run in unclaimed.only("pk", "wall_limit_ms", "requeue_count"):
        # Conditional on the count read: of two reapers racing on one run, one re-enqueues it.
        if Run.objects.filter(pk=run.pk, status=RunStatus.QUEUED, requeue_count=run.requeue_count).update(
            enqueued_at=now, requeue_count=F("requeue_count") + 1
        ):
            _enqueue(run)
            requeued += 1
    if failed or requeued:
        logger.warning("queued runs: %d re-enqueued, %d failed after waiting too long", requeued, failed)
    return {"requeued": requeued, "failed": failed}


def _run_end_with_worker_lost(run_id: uuid.UUID, still: Q, message: str, now: datetime) -> bool:
    """Fail one run with `worker_lost` if it still matches `still`; gives back its slot. True if it ended."""
    with write_transaction():
        ended = run_update_with_events(
            run_id,
            [
                ("error", {"errorText": f"{WORKER_LOST_ERROR}: {message}"}),
                _status_event(RunStatus.FAILED, (WORKER_LOST_ERROR, message)),
            ],
            where=still,
            changes={
                "status": RunStatus.FAILED,
                "error_type": WORKER_LOST_ERROR,
                "error_message": message,
                "finished_at": now,
            },
        )
        if ended is None:
            return False
        quota_run_ended(run_id=run_id)
        return True
