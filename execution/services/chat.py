"""Starting a chat run from a transport request: a text or an AI SDK `useChat` message list, with the
session's history imported the first time the session is named."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from execution.models import (
    TERMINAL_STATUSES,
    ChatSession,
    Message,
    Run,
    run_message_id,
)
from execution.selectors import AgentTarget, session_get
from execution.services.chat_tools import chat_run_continue, tool_responses_from_message
from execution.services.messages import (
    PreparedMessage,
    chat_session_create,
    chat_session_lock,
    message_create,
)
from execution.services.runs import run_cancel, run_start
from execution.write_gate import write_transaction
from lightfast_cloud.errors import LightfastError
from organizations.models import Organization
from organizations.quotas import quota_run_check

MAX_TEXT_CHARS = 32_000


def ui_message_parse(message: Any, *, check_size: bool = True) -> tuple[str, list[dict[str, Any]], str]:
    """(role, text parts, id) of an AI SDK UI message (`parts`) or an older `{role, content}` message."""
    if not isinstance(message, dict):
        raise LightfastError(code="invalid_input", message="Each message must be an object.")
    role = message.get("role")
    if role not in ("user", "assistant", "system"):
        raise LightfastError(
            code="invalid_input", message="A message role must be user, assistant or system."
        )
    public_id = message.get("id")
    public_id = public_id[:64] if isinstance(public_id, str) else ""
    if "parts" in message:
        raw_parts = message["parts"]
        if not isinstance(raw_parts, list):
            raise LightfastError(code="invalid_input", message="`parts` must be a list.")
        # Only text reaches the model from the client; tool parts are the server's own record.
        parts = [
            {"type": "text", "text": part["text"]}
            for part in raw_parts
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
    elif isinstance(message.get("content"), str):
        parts = [{"type": "text", "text": message["content"]}]
    else:
        raise LightfastError(code="invalid_input", message="A message needs `parts` or a `content` string.")
    if check_size:
        _check_text(parts)
    return role, parts, public_id


TRIGGERS = ("submit-message", "regenerate-message")


def chat_run_start(
    *,
    organization: Organization,
    target: AgentTarget,
    created_by: Any,
    text: str | None = None,
    messages: list[Any] | None = None,
    session_id: str | None = None,
    trigger: str | None = None,
    run_id: uuid.UUID | None = None,
) -> Run:
    """Start a chat run from a text or from a `useChat`-style message list (the last one is the user's turn).

    With a `trigger` (the AI SDK request contract: every `useChat` request has one) the client's
    message list is the truth: the stored session keeps the longest prefix of its messages whose
    ids match the client's, drops the rest (a regenerated answer, what followed an edited
    message), imports the client's messages it lacks, and a `regenerate-message` turn adds no
    user message. Without one (older clients) a known session keeps its history and only the new
    user message is appended; a session named for the first time imports the earlier messages.
    A chat has one stream: a new turn cancels the session's runs still going; a cancelled run's
    answer stays in the history only when the client kept it. A list that ends with the assistant's
    message continues that answer with the client's tool results and approval responses
    (`chat_tools.chat_run_continue`; `run_id` names the run of a user's turn only). Turn starts of
    one chat are serial (`chat_session_lock`).
    Every refusal is a LightfastError, a used-up quota (`QuotaExceeded`) included.
    """

    limit: int = settings.LIGHTFAST_CHAT_MAX_MESSAGES
    turn = _chat_turn(messages=messages, text=text, session_id=session_id, trigger=trigger)
    if turn is None:
        # `addToolResult` / `addToolApprovalResponse` and then the AI SDK's automatic send: the
        # client posts the chat again, its last message the answer with the calls answered.
        assert messages is not None
        return chat_run_continue(
            organization=organization,
            target=target,
            created_by=created_by,
            session_id=session_id,
            responses=tool_responses_from_message(messages[-1]),
            answer_id=ui_message_parse(messages[-1], check_size=False)[2],
        )
    parts, history, regenerate = turn.parts, turn.history, turn.regenerate
    # The write gate (SQLite) for the whole start: run_start's own transaction nests in this one.
    with write_transaction():
        session: ChatSession | None = None
        if session_id is not None:
            chat_session_lock(organization=organization, public_id=session_id)
            session = session_get(organization=organization, public_id=session_id)
            if session is not None and session.agent != target.agent_id:
                raise LightfastError(code="invalid_input", message="That session belongs to another agent.")
            if session is None:
                _check_length(len(history) + (0 if regenerate else 1), limit)
                session = chat_session_create(
                    organization=organization,
                    agent=target.agent_id,
                    public_id=session_id,
                    created_by=created_by,
                )
                for role, history_parts, public_id in history:
                    _check_text(history_parts)
                    message_create(session=session, role=role, parts=history_parts, public_id=public_id)
            elif trigger is not None:
                _session_follow_client(session, history, regenerate=regenerate, limit=limit)
            else:
                _check_length(session.messages.count() + 1, limit)
        return run_start(
            organization=organization,
            bundle_version=target.version,
            agent_key=target.agent_key,
            session=session,
            parts=parts,
            regenerate=regenerate,
            message_public_id=turn.user_public_id,
            created_by=created_by,
            run_id=run_id,
            savepoint=False,  # its refusal fails this whole transaction: two statements less per turn
        )


@dataclass(frozen=True)
class ChatTurn:
    """A user's turn as a chat request states it, checked without the database."""

    parts: list[dict[str, Any]]
    history: list[tuple[str, list[dict[str, Any]], str]]
    user_public_id: str
    regenerate: bool


def _chat_turn(
    *, messages: list[Any] | None, text: str | None, session_id: str | None, trigger: str | None
) -> ChatTurn | None:
    """The request's turn, or None when it continues an answer (its last message the assistant's).

    Raises the LightfastError of a malformed request (`chat_run_start` documents the contract).
    """
    if trigger is not None and trigger not in TRIGGERS:
        raise LightfastError(
            code="invalid_input", message="`trigger` must be submit-message or regenerate-message."
        )
    regenerate = trigger == "regenerate-message"
    if messages is not None:
        if not isinstance(messages, list) or not messages:
            raise LightfastError(code="invalid_input", message="`messages` must be a non-empty list.")
        parsed = [ui_message_parse(message, check_size=False) for message in messages]
        role, parts, user_public_id = parsed[-1]
        if role == "assistant" and not regenerate:
            return None
        if role != "user":
            raise LightfastError(
                code="invalid_input",
                message="The last message must be the user's (or the assistant's, to send tool results).",
            )
        _check_text(parts)
        history = parsed if regenerate else parsed[:-1]
    else:
        if not isinstance(text, str) or not text.strip():
            raise LightfastError(code="invalid_input", message="Send `input` text or `messages`.")
        if len(text) > MAX_TEXT_CHARS:
            raise LightfastError(
                code="invalid_input", message=f"`input` exceeds {MAX_TEXT_CHARS} characters."
            )
        parts, history, user_public_id = [{"type": "text", "text": text}], [], ""
    if session_id is not None and (not isinstance(session_id, str) or not 0 < len(session_id) <= 200):
        raise LightfastError(
            # `id` in a useChat body, `session` in the REST API and the websocket.
            code="invalid_input",
            message="The chat's id (`id` or `session`) must be a string of 1 to 200 characters.",
        )
    if regenerate and session_id is None:
        raise LightfastError(code="invalid_input", message="`regenerate-message` needs the chat `id`.")
    return ChatTurn(parts=parts, history=history, user_public_id=user_public_id, regenerate=regenerate)


def chat_turn_check(
    *,
    organization: Organization,
    target: AgentTarget,
    messages: list[Any],
    session_id: str | None,
    trigger: str | None,
) -> bool:
    """Refuse now what `chat_run_start` would refuse for this `useChat` request; write nothing.

    True for a user's turn: everything that refuses one is checked here as the database stands
    (its text, the session's agent and length, the quotas), so a caller may answer before it calls
    `chat_run_start`, which checks all of it again in its transaction (only a request that loses a
    race meanwhile, such as the last run slot, is refused there). False for a request that continues
    an answer: its checks need the stored answer, and only `chat_run_start` makes them.
    """
    turn = _chat_turn(messages=messages, text=None, session_id=session_id, trigger=trigger)
    if turn is None:
        return False
    limit: int = settings.LIGHTFAST_CHAT_MAX_MESSAGES
    session = session_get(organization=organization, public_id=session_id) if session_id is not None else None
    if session is not None and session.agent != target.agent_id:
        raise LightfastError(code="invalid_input", message="That session belongs to another agent.")
    if session is None:
        # A new chat imports the client's history.
        _check_length(len(turn.history) + (0 if turn.regenerate else 1), limit)
        for _, history_parts, _ in turn.history:
            _check_text(history_parts)
    elif trigger is not None:
        # A known chat is made to follow the client's list: as many messages as it holds.
        _check_length(len(turn.history) + (0 if turn.regenerate else 1), limit)
    else:
        _check_length(session.messages.count() + 1, limit)
    quota_run_check(organization=organization)
    return True


def _check_text(parts: list[dict[str, Any]]) -> None:
    if sum(len(part["text"]) for part in parts) > MAX_TEXT_CHARS:
        raise LightfastError(code="invalid_input", message=f"A message exceeds {MAX_TEXT_CHARS} characters.")


def _check_length(count: int, limit: int) -> None:
    if count > limit:
        raise LightfastError(
            code="invalid_input",
            message=f"This chat is too long to continue ({count} messages; the limit is {limit}). "
            "Start a new chat.",
            detail={"messages": count, "limit": limit},
        )


def _session_follow_client(
    session: ChatSession,
    history: list[tuple[str, list[dict[str, Any]], str]],
    *,
    regenerate: bool,
    limit: int,
) -> None:
    """Make the stored session what the client holds before the new turn (see `chat_run_start`)."""
    stored = list(session.messages.order_by("created_at", "pk").values_list("pk", "public_id"))
    kept = 0
    while kept < len(stored) and kept < len(history) and stored[kept][1] == history[kept][2] != "":
        kept += 1
    # Runs still going in this chat: cancelled (one stream per chat). Their answers are written
    # when they end; one the client did not keep is dropped then (`discard`).
    client_ids = {public_id for _, _, public_id in history}
    active = session.runs.exclude(status__in=TERMINAL_STATUSES).values_list("pk", "input", "created_at")
    # Answers the client kept of runs still ending: imported now (the client's copy, stamped with
    # their run's start) so the new turn's model sees them; their run updates them when it ends.
    pending_answers: dict[str, Any] = {}
    for run_id, run_input, created_at in list(active):
        continued = run_input.get("continue") if isinstance(run_input, dict) else None
        answer_id = continued if isinstance(continued, str) and continued else run_message_id(run_id)
        if answer_id in client_ids:
            pending_answers[answer_id] = created_at
        else:
            Run.objects.filter(pk=run_id).update(input={**(run_input or {}), "discardAnswer": True})
        run_cancel(run=Run.objects.get(pk=run_id))
    imported = history[kept:]
    _check_length(kept + len(imported) + (0 if regenerate else 1), limit)
    dropped = [pk for pk, _ in stored[kept:]]
    if dropped:
        Message.objects.filter(pk__in=dropped).delete()
    for role, history_parts, public_id in imported:
        _check_text(history_parts)
        PreparedMessage(
            session=session,
            role=role,
            parts=history_parts,
            public_id=public_id,
            created_at=pending_answers.get(public_id),
        ).execute()
