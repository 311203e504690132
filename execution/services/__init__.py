"""Writes for runs, by subject: sessions and messages, starting and cancelling, chat runs from transport
requests, executing a claimed run, and the reapers."""

from execution.services.chat import chat_run_start, ui_message_parse
from execution.services.messages import (
    PreparedMessage,
    chat_session_create,
    chat_session_get_or_create,
    message_create,
    text_parts,
)
from execution.services.reaping import run_reap_lost, run_reap_queued
from execution.services.run_execution import run_execute
from execution.services.runs import RunNotStartable, run_cancel, run_start

__all__ = [
    "PreparedMessage",
    "RunNotStartable",
    "chat_run_start",
    "chat_session_create",
    "chat_session_get_or_create",
    "message_create",
    "run_cancel",
    "run_execute",
    "run_reap_lost",
    "run_reap_queued",
    "run_start",
    "text_parts",
    "ui_message_parse",
]
