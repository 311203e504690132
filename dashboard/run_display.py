"""Runs as people read them: the filter form of the runs list, a run's error in plain words, and its events
as a timeline (a text's deltas as one entry, a tool call's output with its time)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms

from execution.models import Run, RunEvent, RunStatus

# What each error type a run can end with means, for people; the run's own message follows.
RUN_ERROR_WORDS: dict[str, str] = {
    "cancelled": "The run was stopped before it finished.",
    "timeout": "The run took longer than its time limit, so it was stopped.",
    "worker_lost": "The worker running it stopped (a restart or a crash), so the run could not finish.",
    "quota_exceeded": "A quota of the organization is used up.",
    "rate_limited": "Too many requests at once; try again shortly.",
    "cpu_limit": "A tool used more sandbox CPU time than a run may.",
    "memory_limit": "A tool used more memory than a run may.",
    "stack_overflow": "A tool's code called itself too deeply (a stack overflow).",
    "output_limit": "A tool returned or logged more than the sandbox allows.",
    "egress_denied": "A tool tried to reach a host the organization's egress allow-list does not include.",
    "tool_error": "A tool threw an error.",
    "invalid_input": "The input did not match what the tool accepts.",
    "unknown_tool": "The model called a tool the agent does not have.",
    "syntax_error": "The bundle has a syntax error.",
    "invalid_bundle": "The bundle could not be loaded.",
    "sandbox_crash": "The sandbox failed while running it; trying again may work.",
    "provider_auth": "The model provider refused the API key.",
    "provider_rate_limited": "The model provider is limiting requests; try again shortly.",
    "provider_bad_request": "The model provider refused the request.",
    "provider_unavailable": "The model provider had a server error.",
    "provider_network": "The platform could not reach the model provider.",
    "provider_timeout": "The model provider did not answer in time.",
    "provider_bad_response": "The model provider's answer could not be read.",
}


def error_in_words(error_type: str) -> str:
    """What an error type means, in one sentence."""
    return RUN_ERROR_WORDS.get(error_type, "The run failed.")


class RunFilterForm(forms.Form):
    """The runs list's filters: `Status`, `Agent`, and the days `From` and `To` (UTC)."""

    status = forms.ChoiceField(label="Status", required=False)
    agent = forms.ChoiceField(label="Agent", required=False)
    since = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args: Any, agents: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["status"].choices = [("", "Any status"), *RunStatus.choices]  # type: ignore[attr-defined]
        self.fields["agent"].choices = [("", "Any agent"), *((agent, agent) for agent in agents)]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and until < since:
            self.add_error("until", "The last day comes before the first one.")
        return cleaned


@dataclass
class TimelineEntry:
    """One line of a run's timeline: the events it covers, when (after the run was created) and what."""

    seq: int
    last_seq: int
    at: datetime
    offset_ms: int
    kind: str
    title: str
    text: str = ""
    detail: Any = None
    has_detail: bool = False


_TITLES = {
    "start": "Run started",
    "start-step": "Model step started",
    "finish-step": "Model step finished",
    "data-usage": "Usage",
    "abort": "Stopped",
}
# Events that say nothing a person needs in the timeline.
_QUIET = frozenset({"text-start", "text-end"})


def run_timeline(run: Run, events: list[RunEvent]) -> list[TimelineEntry]:
    """The run's events in order as a timeline; consecutive text deltas are one `Text` entry."""
    entries: list[TimelineEntry] = []
    tools: dict[str, tuple[str, datetime]] = {}
    origin = run.created_at

    def entry(
        event: RunEvent, kind: str, title: str, text: str = "", detail: Any = None, *, has: bool = False
    ) -> None:
        offset = max(0, round((event.created_at - origin).total_seconds() * 1000))
        entries.append(
            TimelineEntry(event.seq, event.seq, event.created_at, offset, kind, title, text, detail, has)
        )

    for event in events:
        payload = event.payload if isinstance(event.payload, dict) else {}
        kind = event.type
        if kind in _QUIET:
            continue
        if kind == "text-delta":
            last = entries[-1] if entries else None
            if last is not None and last.kind == "text" and last.last_seq < event.seq:
                last.text += str(payload.get("delta", ""))
                last.last_seq = event.seq
            else:
                entry(event, "text", "Text", str(payload.get("delta", "")))
            continue
        if kind == "tool-input-available":
            name = str(payload.get("toolName", "tool"))
            tools[str(payload.get("toolCallId"))] = (name, event.created_at)
            entry(event, "tool", f"Tool call: {name}", "Input", payload.get("input"), has=True)
        elif kind in ("tool-output-available", "tool-output-error"):
            name, started = tools.get(str(payload.get("toolCallId")), ("tool", event.created_at))
            took = round((event.created_at - started).total_seconds() * 1000)
            if kind == "tool-output-available":
                entry(
                    event, "tool", f"Tool output: {name}", f"after {took} ms", payload.get("output"), has=True
                )
            else:
                entry(
                    event, "error", f"Tool error: {name}", f"{payload.get('errorText', '')} (after {took} ms)"
                )
        elif kind == "data-log":
            data = _data(payload)
            name = tools[call][0] if (call := str(data.get("toolCallId"))) in tools else "tool"
            lines = [_log_line(line) for line in data.get("logs") or []]
            entry(event, "log", f"Logs of {name}", "\n".join(lines))
        elif kind == "error":
            entry(event, "error", "Error", str(payload.get("errorText", "")))
        elif kind == "finish":
            entry(event, "status", "Finished", f"reason: {payload.get('finishReason', 'stop')}")
        elif kind == "data-status":
            entry(event, "status", f"Status: {_data(payload).get('status', '?')}")
        elif kind == "data-usage":
            entry(event, "usage", "Usage", detail=payload.get("data"), has=True)
        else:
            entry(event, "step", _TITLES.get(kind, kind))
    return entries


def _data(payload: dict[str, Any]) -> dict[str, Any]:
    """A data part's `data` object (empty when it is not one)."""
    data = payload.get("data")
    return data if isinstance(data, dict) else {}


def _log_line(line: Any) -> str:
    if isinstance(line, dict):
        level = str(line.get("level") or "log")
        return f"[{level}] {line.get('message', '')}"
    return str(line)
