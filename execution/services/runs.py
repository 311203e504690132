"""Starting and cancelling runs: `run_start` (a queued run, enqueued once committed) and `run_cancel`."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents.models import AgentManifest, BundleVersion
from execution import statements
from execution.events import run_update_with_events
from execution.models import (
    ChatSession,
    MessageRole,
    Run,
    RunKind,
    RunStatus,
)
from execution.services.messages import PreparedMessage, text_parts
from execution.supervision import CANCELLED
from execution.write_gate import after_commit, write_transaction
from lightfast_cloud.errors import LightfastError
from organizations.models import Organization
from organizations.quotas import (
    effective_run_limit,
    quota_run_released,
    quota_run_started,
)

# fire if the orchestration itself hangs (prefork pools; the threads pool cannot enforce them).
TASK_SOFT_LIMIT_MARGIN_S = 30
TASK_HARD_LIMIT_MARGIN_S = 60


class RunNotStartable(LightfastError):
    """The run cannot start: `invalid_bundle`, `unknown_tool` or `invalid_input` (detail: an object)."""

    def __init__(self, message: str, *, code: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code, detail=detail or {})


def _check_startable(
    *, organization: Organization, version: BundleVersion, agent_key: str, tool: str | None
) -> AgentManifest:
    if version.organization_id != organization.pk:
        # Never reveal another organization's versions: same answer as an unknown one.
        raise RunNotStartable(code="invalid_bundle", message="No such bundle version.")
    if not version.is_runnable:
        raise RunNotStartable(
            code="invalid_bundle",
            message=f"Version {version.number} is {version.status} and cannot run.",
            detail={"status": version.status},
        )
    agent = version.agent(agent_key)
    if agent is None:
        raise RunNotStartable(
            code="invalid_input",
            message=f"The bundle has no agent {agent_key!r}.",
            detail={"agent": agent_key, "agents": sorted(version.agents())},
        )
    if tool is not None and not agent.has_tool(tool):
        raise RunNotStartable(
            code="unknown_tool",
            message=f"Agent {agent_key!r} has no tool {tool!r}.",
            detail={"tool": tool, "tools": agent.tool_names},
        )
    return agent


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
    regenerate: bool = False,
    message_public_id: str = "",
    continue_message: str = "",
    run_id: uuid.UUID | None = None,
    savepoint: bool = True,
) -> Run:
    """Create a queued run (with the id `run_id` when given); enqueue `execute_run` once committed.

    Chat runs (no `tool`) append the user's message (`text` or UI `parts`) to `session`
    (a new session when None) and answer it with the agent loop; `regenerate` appends no
    message (the session's last message is the user's already). The user message and the
    answer are stamped with the run's `created_at`, so a session's history is in the order
    the turns started, whenever each answer was written. `continue_message` (the public id of
    the session's last, assistant, message) appends no message either: the run continues that
    answer (client tool results, approvals; `services.chat_tools`). Tool runs (`tool` and
    `tool_input`) call one tool of the agent in the sandbox. `savepoint=False`: a caller whose own
    transaction this one nests in, and which lets a refusal fail all of it, saves the savepoint.
    """
    agent = _check_startable(
        organization=organization, version=bundle_version, agent_key=agent_key, tool=tool
    )
    kind = RunKind.TOOL if tool is not None else RunKind.CHAT
    if tool is not None and tool in agent.client_tools:
        raise RunNotStartable(
            code="unknown_tool",
            message=f"Tool {tool!r} has no execute: it is a client-side tool, run by the chat's client.",
            detail={"tool": tool, "tools": agent.tool_names},
        )
    if continue_message:
        regenerate = True  # no user message: the run answers on from the session's last message
    if regenerate and session is None:
        raise RunNotStartable(code="invalid_input", message="Regenerating needs a chat session.")
    if kind == RunKind.CHAT and not regenerate:
        parts = parts if parts is not None else text_parts(text or "")
        if not any(part.get("type") == "text" and str(part.get("text", "")).strip() for part in parts):
            raise RunNotStartable(code="invalid_input", message="The message has no text.")
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
        input=(
            {"tool": tool, "input": tool_input}
            if kind == RunKind.TOOL
            else ({"continue": continue_message} if continue_message else {})
        ),
        wall_limit_ms=effective_run_limit(organization=organization, field="run_wall_ms"),
        created_by=created_by,
        backend=settings.LIGHTFAST_SANDBOX_BACKEND,
    )
    if run_id is not None:
        run.id = run_id  # a caller that listens for the run's events before it exists
    run_insert = statements.insert(run)
    message = (
        PreparedMessage(
            session=session,
            role=MessageRole.USER,
            parts=list(parts or []),
            run=run,
            public_id=message_public_id,
            session_is_new=new_session is not None,
            created_at=run.created_at,
        )
        if kind == RunKind.CHAT and session is not None and not regenerate
        else None
    )
    with write_transaction(savepoint=savepoint):
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
        after_commit(lambda: run_enqueue(run))
    return run


def run_enqueue(run: Run) -> None:
    """Send the run's `execute_run` task, its Celery limits above the run's wall limit.

    A run that continues an answer names that message, so the worker's first event (`start`,
    written with the claim) carries its id.
    """
    from execution.tasks import execute_run

    wall_s = run.wall_limit_ms / 1000
    continued = run.input.get("continue") if isinstance(run.input, dict) else None
    execute_run.apply_async(
        args=[str(run.pk)],
        kwargs={"message_id": continued} if isinstance(continued, str) and continued else {},
        soft_time_limit=wall_s + TASK_SOFT_LIMIT_MARGIN_S,
        time_limit=wall_s + TASK_HARD_LIMIT_MARGIN_S,
    )


def run_cancel(*, run: Run) -> Run:
    """Cancel a run: a queued run ends `cancelled` now; a running one within a second (its worker stops)."""
    now = timezone.now()
    with write_transaction():
        ended = run_update_with_events(
            run,
            [run_status_event(RunStatus.CANCELLED)],
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


def run_status_event(
    status: str, error: tuple[str, str] | None = None, *, retry: dict[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """The transient `data-status` event announcing a run's status (and error, or the retry it waits for)."""
    data: dict[str, Any] = {"status": status}
    if error is not None:
        data["error"] = {"type": error[0], "message": error[1]}
    if retry is not None:
        data["retry"] = retry
    return ("data-status", {"data": data, "transient": True})
