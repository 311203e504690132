"""Chat sessions and their messages: creating a session, appending a message (its statements built
ahead of the write transaction that runs them)."""

from __future__ import annotations

import uuid
from typing import Any

from django.utils import timezone

from execution import statements
from execution.models import (
    ChatSession,
    Message,
    Run,
)
from execution.statements import insert_row
from organizations.models import Organization


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
        created_at: Any = None,
    ) -> None:
        now = timezone.now()
        self.message = Message(
            session=session,
            role=role,
            parts=parts,
            run=run,
            public_id=public_id or f"msg_{uuid.uuid4().hex}",
            created_at=created_at or now,
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
