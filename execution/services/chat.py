"""Starting a chat run from a transport request: a text or an AI SDK `useChat` message list, with the
session's history imported the first time the session is named."""

from __future__ import annotations

from typing import Any

from execution.models import (
    ChatSession,
    Run,
)
from execution.selectors import AgentTarget, session_get
from execution.services.messages import chat_session_get_or_create, message_create
from execution.services.runs import run_start
from execution.write_gate import write_transaction
from lightfast_cloud.errors import LightfastError
from organizations.models import Organization

MAX_MESSAGES = 500
MAX_TEXT_CHARS = 32_000


def ui_message_parse(message: Any) -> tuple[str, list[dict[str, Any]], str]:
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
    if sum(len(part["text"]) for part in parts) > MAX_TEXT_CHARS:
        raise LightfastError(code="invalid_input", message=f"A message exceeds {MAX_TEXT_CHARS} characters.")
    return role, parts, public_id


def chat_run_start(
    *,
    organization: Organization,
    target: AgentTarget,
    created_by: Any,
    text: str | None = None,
    messages: list[Any] | None = None,
    session_id: str | None = None,
) -> Run:
    """Start a chat run from a text or from a `useChat`-style message list (the last one is the user's turn).

    A session named for the first time imports the earlier messages as its history; a known
    session already holds them, so only the new user message is appended. Every refusal is a
    LightfastError, a used-up quota (`QuotaExceeded`) included; each transport renders it from
    the one error table: a status, or an `error` frame.
    """

    if messages is not None:
        if not isinstance(messages, list) or not messages or len(messages) > MAX_MESSAGES:
            raise LightfastError(
                code="invalid_input", message=f"`messages` must be a list of 1 to {MAX_MESSAGES} messages."
            )
        parsed = [ui_message_parse(message) for message in messages]
        role, parts, _ = parsed[-1]
        if role != "user":
            raise LightfastError(code="invalid_input", message="The last message must be the user's.")
        history = parsed[:-1]
    else:
        if not isinstance(text, str) or not text.strip():
            raise LightfastError(code="invalid_input", message="Send `input` text or `messages`.")
        if len(text) > MAX_TEXT_CHARS:
            raise LightfastError(
                code="invalid_input", message=f"`input` exceeds {MAX_TEXT_CHARS} characters."
            )
        parts, history = [{"type": "text", "text": text}], []
    if session_id is not None and (not isinstance(session_id, str) or not 0 < len(session_id) <= 200):
        raise LightfastError(
            code="invalid_input", message="`session` must be a string of 1 to 200 characters."
        )
    # The write gate (SQLite) for the whole start: run_start's own transaction nests in this one.
    with write_transaction():
        session: ChatSession | None = None
        if session_id is not None:
            session = session_get(organization=organization, public_id=session_id)
            if session is not None and session.agent != target.agent_id:
                raise LightfastError(code="invalid_input", message="That session belongs to another agent.")
            if session is None:
                session = chat_session_get_or_create(
                    organization=organization,
                    agent=target.agent_id,
                    public_id=session_id,
                    created_by=created_by,
                )
                for role, history_parts, public_id in history:
                    message_create(session=session, role=role, parts=history_parts, public_id=public_id)
        return run_start(
            organization=organization,
            bundle_version=target.version,
            agent_key=target.agent_key,
            session=session,
            parts=parts,
            created_by=created_by,
        )
