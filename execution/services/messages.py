"""Chat sessions and their messages: creating a session, appending a message (its statements built
ahead of the write transaction that runs them)."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.db import connection
from django.utils import timezone

from execution import statements
from execution.models import (
    ChatSession,
    Message,
    Run,
)
from execution.statements import insert_row
from lightfast_cloud import sql
from organizations.models import Organization


def chat_session_lock(*, organization: Organization, public_id: str) -> None:
    """Hold the chat's turn lock until the current transaction ends: turn starts of one chat are serial.

    A turn reads the stored history, makes it follow the client's, appends its message and creates
    its run; two at once would interleave those writes. On PostgreSQL a transaction-level advisory
    lock keyed by the organization and the chat id (so it also covers a chat not created yet) makes
    the second wait for the first's commit. It is taken before the session row is read and before
    any row lock; a chat run's ending that writes its answer takes it first too (a turn starting
    meanwhile imports or drops that answer), so it adds no lock-order cycle. On SQLite the write
    gate (`write_transaction`) already serialises every writer.
    """
    chat_session_lock_of(organization_id=organization.pk, public_id=public_id)


def chat_session_lock_of(*, organization_id: int, public_id: str) -> None:
    """`chat_session_lock` by the organization's id (a run's ending: `run_execution._run_finish_commit`)."""
    if connection.vendor != "postgresql":
        return
    if not connection.in_atomic_block:
        raise RuntimeError("chat_session_lock outside a transaction would release at once")
    digest = hashlib.blake2b(f"chat:{organization_id}:{public_id}".encode(), digest_size=8).digest()
    sql.fetch_one("SELECT pg_advisory_xact_lock(%s)", [int.from_bytes(digest, "big", signed=True)])


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


def chat_session_create(
    *, organization: Organization, agent: str, public_id: str, created_by: Any = None
) -> ChatSession:
    """A new session named `public_id`, for a caller that holds the chat's lock and saw no such session.

    One INSERT (no read, no savepoint as `get_or_create` takes): under `chat_session_lock` (or
    SQLite's write gate) nobody else can create the same chat meanwhile.
    """
    return insert_row(
        ChatSession(organization=organization, agent=agent, public_id=public_id, created_by=created_by)
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
