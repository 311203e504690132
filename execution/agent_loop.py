"""The agent loop: history, system prompt and tools → model steps, sandbox tool calls, streamed events."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from agents.models import AgentManifest
from agents.selectors import (
    SandboxSettings,
    sandbox_settings_for,
)
from agents.services.tools import tool_call
from execution.events import run_update_with_events
from execution.models import Message, MessageRole, Run, RunStatus
from execution.providers import model_resolve
from execution.providers.base import CancelToken, ModelRequest, StepEnd, TextDelta, ToolCall, ToolSpec
from execution.providers.demo import DemoProvider
from execution.sandbox import api as sandbox_api
from execution.sandbox.errors import SandboxError
from execution.sandbox.values import clean_text, clean_value
from execution.supervision import WORKER_LOST
from execution.write_gate import TRANSIENT_DATABASE_ERRORS, DatabaseRetries, read_retrying
from lightfast_cloud import sql

logger = logging.getLogger(__name__)

# Log lines of one tool call forwarded as a `data-log` event (the sandbox already caps bytes).
MAX_LOG_ENTRIES = 100
# Tool calls of one model step that run in the sandbox at the same time (the pool is sized to
# the cores; more would only queue there).
MAX_PARALLEL_TOOL_CALLS = 4


class RunCancelled(Exception):
    """The run's cancel token fired (cancel request, wall timeout or lost worker)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Usage:
    """What a run consumed; copied onto the Run when it ends."""

    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    sandbox_cpu_ms: int = 0
    tool_calls: int = 0
    steps: int = 0

    def add_sandbox(self, usage: dict[str, Any]) -> None:
        """Count one sandbox call."""
        self.tool_calls += 1
        cpu = usage.get("cpu_ms", 0)
        if isinstance(cpu, int | float):
            self.sandbox_cpu_ms += int(cpu)


class AssistantTurn:
    """Writes one assistant message as events and as AI SDK UI message parts.

    Events are buffered and written together by `flush()`, which the loop calls before
    anything that can block (waiting for the next model chunk, a sandbox call) — so a
    client never waits on a buffered event, and chunks that are ready together cost one
    transaction instead of one each.
    """

    def __init__(self, run: Run, *, message_id: str) -> None:
        self.run = run
        self.message_id = message_id
        # A continued answer (client tool results, approvals) starts from its stored parts (agent_loop_run).
        self.parts: list[dict[str, Any]] = []
        self.text = ""
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._open_text: dict[str, Any] | None = None
        self._text_ids = 0
        self._step_open = False
        # The agent's opt-in: tool log lines reach end users' streams (else they are `private`).
        self.stream_logs = False

    def emit(self, event_type: str, payload: dict[str, Any] | None = None) -> None:
        """Buffer one event."""
        self._pending.append((event_type, payload or {}))

    def log(self, tool_call_id: str, logs: list[Any]) -> None:
        """A tool call's console lines: always a run event; `private` unless the agent streams logs."""
        payload: dict[str, Any] = {"data": {"toolCallId": tool_call_id, "logs": logs}, "transient": True}
        if not self.stream_logs:
            payload["private"] = True
        self.emit("data-log", payload)

    def flush(self) -> None:
        """Write the buffered events (one transaction, consecutive seqs, one notification).

        Only while the run is still this attempt's: once the reaper took it back (this worker
        stopped heartbeating and was presumed lost), the write matches nothing and the attempt
        stops here, before anything else it would do (a tool call above all).
        """
        if not self._pending:
            return
        events = self.take_pending()
        # Conditional on the run's `last_seq` too, so a write whose commit the database did not
        # confirm (the connection dropped) can be tried again without writing its events twice.
        expected = self.run.last_seq
        retries: DatabaseRetries | None = None
        while True:
            try:
                written = run_update_with_events(
                    self.run, events, status=RunStatus.RUNNING, attempt=self.run.attempt, last_seq=expected
                )
                break
            except TRANSIENT_DATABASE_ERRORS as exc:
                retries = retries or DatabaseRetries(f"run {self.run.pk}: writing events")
                retries.wait(exc)
        if written is None and retries is not None and self._committed_unseen(expected, len(events)):
            return
        if written is None:
            raise RunCancelled(WORKER_LOST)

    def _committed_unseen(self, expected: int, count: int) -> bool:
        """After a failed try: True when it had committed all the same (the run moved on by `count`)."""
        still_ours = Run.objects.filter(
            pk=self.run.pk, status=RunStatus.RUNNING, attempt=self.run.attempt, last_seq=expected + count
        )
        if not still_ours.exists():
            return False
        self.run.last_seq = expected + count
        return True

    def take_pending(self) -> list[tuple[str, dict[str, Any]]]:
        """Hand the buffered events to a caller that writes them in its own transaction."""
        pending, self._pending = self._pending, []
        return pending

    def start_step(self) -> None:
        """Open a model step."""
        self.emit("start-step")
        self._step_open = True
        self.parts.append({"type": "step-start"})

    def text_delta(self, delta: str) -> None:
        """Append assistant text, opening a text part if none is open."""
        if self._open_text is None:
            self._text_ids += 1
            # A retried run's stream holds its earlier attempts' parts too: ids stay unique across them.
            attempt = self.run.attempt or 1
            self._open_text = {
                "type": "text",
                "text": "",
                "state": "streaming",
                "_id": f"txt-{self._text_ids}" if attempt == 1 else f"txt-{attempt}-{self._text_ids}",
            }
            self.parts.append(self._open_text)
            self.emit("text-start", {"id": self._open_text["_id"]})
        self._open_text["text"] += delta
        self.text += delta
        self.emit("text-delta", {"id": self._open_text["_id"], "delta": delta})

    def end_text(self) -> None:
        """Close the open text part, if any."""
        if self._open_text is not None:
            self.emit("text-end", {"id": self._open_text.pop("_id")})
            self._open_text["state"] = "done"
            self._open_text = None

    def tool_input(self, call: ToolCall, tool_input: Any) -> dict[str, Any]:
        """Announce a tool call with its input (raw text when the model's arguments were not JSON)."""
        self.end_text()
        part = {
            "type": f"tool-{call.name}",
            "toolCallId": call.id,
            "state": "input-available",
            "input": tool_input,
        }
        self.parts.append(part)
        # As the AI SDK streams a call: its start, then its whole input (arguments are not streamed).
        self.emit("tool-input-start", {"toolCallId": call.id, "toolName": call.name})
        self.emit("tool-input-available", {"toolCallId": call.id, "toolName": call.name, "input": tool_input})
        return part

    def approval_request(self, part: dict[str, Any], approval_id: str) -> None:
        """Ask the user to approve a call before it runs (AI SDK 6 `tool-approval-request`)."""
        part.update(state="approval-requested", approval={"id": approval_id})
        self.emit("tool-approval-request", {"approvalId": approval_id, "toolCallId": part["toolCallId"]})

    def tool_denied(self, part: dict[str, Any]) -> None:
        """Record a call the user denied: it never ran."""
        part["state"] = "output-denied"
        self.emit("tool-output-denied", {"toolCallId": part["toolCallId"]})

    def tool_output(self, part: dict[str, Any], output: Any) -> None:
        """Record a tool's output."""
        part.update(state="output-available", output=output)
        self.emit("tool-output-available", {"toolCallId": part["toolCallId"], "output": output})

    def tool_error(self, part: dict[str, Any], error_text: str) -> None:
        """Record a tool call that failed; the model sees `error_text`."""
        part.update(state="output-error", errorText=error_text)
        self.emit("tool-output-error", {"toolCallId": part["toolCallId"], "errorText": error_text})

    def finish_step(self) -> None:
        """Close a model step."""
        self.end_text()
        self.emit("finish-step")
        self._step_open = False

    def close_step(self) -> None:
        """Close whatever is open (text, step): the run ends in the middle of a step."""
        self.end_text()
        if self._step_open:
            self.finish_step()

    def message_parts(self) -> list[dict[str, Any]]:
        """The parts to store as the assistant message (an open text part counts as done)."""
        self.end_text()
        return [{key: value for key, value in part.items() if not key.startswith("_")} for part in self.parts]


@dataclass
class LoopResult:
    """How the loop ended when the model stopped (errors and cancellation raise instead).

    `pending`: the calls of the last step that wait for the chat's client, a client-side tool's
    result or the user's approval (`{toolCallId, toolName, kind: "client" | "approval",
    approvalId?}`); a later request continues the same answer with them (services.chat_tools).
    """

    text: str
    finish_reason: str
    usage: Usage = field(default_factory=Usage)
    pending: list[dict[str, Any]] = field(default_factory=list)


# The kinds of call a step can leave waiting for the client.
PENDING_CLIENT = "client"
PENDING_APPROVAL = "approval"


def approval_id_new() -> str:
    """An unguessable approval id (the call it approves is recorded with it, server side)."""
    return f"apr_{secrets.token_urlsafe(18)}"


def step_limit(agent: AgentManifest) -> int:
    """The bundle's stopWhen step count, bounded by the platform cap."""
    cap: int = settings.LIGHTFAST_RUN_MAX_STEPS
    return min(agent.step_count, cap) if agent.step_count is not None else cap


def tool_specs(agent: AgentManifest) -> list[ToolSpec]:
    """The agent's tools as the model sees them."""
    specs = []
    for name, tool in sorted(agent.tools.items()):
        schema = tool.get("inputSchema") or {"type": "object", "properties": {}}
        # OpenAI-compatible APIs reject `$schema` in function parameters on some servers.
        parameters = {key: value for key, value in schema.items() if key != "$schema"}
        specs.append(
            ToolSpec(name=name, description=str(tool.get("description") or ""), parameters=parameters)
        )
    return specs


def session_history(session_id: int) -> list[tuple[str, list[dict[str, Any]], str]]:
    """(role, UI parts, public id) of the session's messages, oldest first (one plain SELECT)."""
    parts = sql.converter(Message, "parts")
    rows = sql.fetch_all(_history_sql(sql.vendor()), [session_id])
    return [(str(role), parts(value), str(public_id)) for role, value, public_id in rows]


@functools.cache
def _history_sql(vendor: str) -> str:
    return "SELECT {}, {}, {} FROM {} WHERE {} = %s ORDER BY {}, {}".format(  # noqa: S608 - identifiers only
        sql.column(Message, "role"),
        sql.column(Message, "parts"),
        sql.column(Message, "public_id"),
        sql.table(Message),
        sql.column(Message, "session"),
        sql.column(Message, "created_at"),
        sql.column(Message, "id"),
    )


def model_messages(system: str, history: list[tuple[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Chat-completions messages for the system prompt and the session's UI messages (role, parts)."""
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    for role, parts in history:
        if role == MessageRole.ASSISTANT:
            messages.extend(_assistant_messages(parts))
        else:
            text = "".join(part.get("text", "") for part in parts if part.get("type") == "text")
            messages.append({"role": "system" if role == MessageRole.SYSTEM else "user", "content": text})
    return messages


def _assistant_messages(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One assistant message per step, each followed by the results of its tool calls."""
    out: list[dict[str, Any]] = []
    steps: list[list[dict[str, Any]]] = [[]]
    for part in parts:
        if part.get("type") == "step-start":
            steps.append([])
        else:
            steps[-1].append(part)
    for step in steps:
        text = "".join(part.get("text", "") for part in step if part.get("type") == "text")
        calls = [
            part for part in step if str(part.get("type", "")).startswith("tool-") and part.get("toolCallId")
        ]
        if not text and not calls:
            continue
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            assistant["tool_calls"] = [
                {
                    "id": part["toolCallId"],
                    "type": "function",
                    "function": {
                        "name": part["type"][len("tool-") :],
                        "arguments": _arguments_text(part.get("input")),
                    },
                }
                for part in calls
            ]
        out.append(assistant)
        for part in calls:
            out.append(
                {"role": "tool", "tool_call_id": part["toolCallId"], "content": _tool_result_text(part)}
            )
    return out


def _arguments_text(tool_input: Any) -> str:
    return tool_input if isinstance(tool_input, str) else json.dumps(tool_input, separators=(",", ":"))


def _tool_result_text(part: dict[str, Any]) -> str:
    state = part.get("state")
    if state == "output-available":
        return json.dumps(part.get("output"), separators=(",", ":"))
    if state == "output-error":
        return json.dumps({"error": part.get("errorText", "")})
    if state == "output-denied":
        return _denied_text(part)
    # A call whose run ended before it answered, or that the chat left unanswered (a client-side
    # tool without a result, an approval never given) when the user wrote on.
    return json.dumps({"error": "the tool call did not finish"})


def _denied_text(part: dict[str, Any]) -> str:
    """What the model is told of a call the user denied (the AI SDK's words, with the user's reason)."""
    approval = part.get("approval")
    reason = approval.get("reason") if isinstance(approval, dict) else None
    return "Tool execution denied." + (f" Reason: {reason}" if isinstance(reason, str) and reason else "")


def _check(cancel: CancelToken) -> None:
    if cancel.cancelled:
        raise RunCancelled(cancel.reason)


def agent_loop_run(*, run: Run, turn: AssistantTurn, cancel: CancelToken, usage: Usage) -> LoopResult:
    """Drive the model and the tools until the model stops, the step limit is reached or a step's
    calls wait for the chat's client (client-side tools, approvals)."""
    agent = run.bundle_version.agent(run.agent_key) or AgentManifest.from_spec(run.agent_key, {})
    resolved = read_retrying(
        f"run {run.pk}: resolving its model",
        functools.partial(model_resolve, agent.model, organization=run.organization),
    )
    turn.stream_logs = agent.stream_logs
    usage.model = resolved.label
    # The demo model answers instantly, so its chunks are written together at the next
    # blocking point; a network provider blocks before and between chunks, so what is
    # buffered is written before the request and each chunk as it arrives.
    network = not isinstance(resolved.provider, DemoProvider)
    history = (
        read_retrying(f"run {run.pk}: reading its chat", functools.partial(session_history, run.session_id))
        if run.session_id is not None
        else []
    )
    tools = tool_specs(agent)
    tool_names = {tool.name for tool in tools}
    context = _tool_context(run)
    continued = run.input.get("continue") if isinstance(run.input, dict) else None
    if continued:
        # The answer this run continues is the session's last message; the model sees it as the
        # approved calls leave it (run now) and as the user's denials and the client's results did.
        if not history or history[-1][2] != continued:
            raise SandboxError(
                "invalid_input", "The answer to continue is no longer the chat's last message."
            )
        turn.parts = list(history.pop()[1])
        _resume_approved(run=run, turn=turn, agent=agent, context=context, cancel=cancel, usage=usage)
        _check(cancel)
    messages = model_messages(
        str(agent.system or ""),
        [(role, parts) for role, parts, _ in history] + ([("assistant", turn.parts)] if continued else []),
    )
    stop_tools = agent.stop_tools
    finish_reason = "stop"
    step_texts: list[str] = []
    pending: list[dict[str, Any]] = []
    for _ in range(step_limit(agent)):
        _check(cancel)
        usage.steps += 1
        turn.start_step()
        calls: list[ToolCall] = []
        step_text = ""
        if network:
            turn.flush()
        for event in resolved.provider.stream(
            ModelRequest(model=resolved.model, messages=messages, tools=tools), cancel=cancel
        ):
            # Provider text holds the rule sandbox values do (values.py): storable and sendable everywhere.
            if isinstance(event, TextDelta):
                text = clean_text(event.text)
                turn.text_delta(text)
                step_text += text
            elif isinstance(event, ToolCall):
                calls.append(
                    ToolCall(clean_text(event.id), clean_text(event.name), clean_text(event.arguments))
                )
            elif isinstance(event, StepEnd):
                finish_reason = event.finish_reason
                usage.input_tokens += event.input_tokens
                usage.output_tokens += event.output_tokens
            if network:
                turn.flush()
        _check(cancel)
        turn.end_text()
        if step_text.strip():
            step_texts.append(step_text.strip())
        if not calls:
            turn.finish_step()
            break
        messages.append(
            {
                "role": "assistant",
                "content": step_text or None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": call.arguments},
                    }
                    for call in calls
                ],
            }
        )
        results, pending = _run_tools(
            run=run,
            turn=turn,
            calls=calls,
            agent=agent,
            tool_names=tool_names,
            context=context,
            cancel=cancel,
            usage=usage,
        )
        for call, result in zip(calls, results, strict=True):
            if result is not None:
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        _check(cancel)
        turn.finish_step()
        if pending:
            # As the AI SDK does: a step whose calls are not all answered ends the request; the
            # client answers them and posts the chat again (finishReason `tool-calls`).
            finish_reason = "tool-calls"
            break
        if any(call.name in stop_tools for call in calls):
            break  # stopWhen: hasToolCall(name), checked after the step, as the AI SDK does
    # What is still buffered goes out with the run's terminal events, in one transaction.
    # Steps are separate utterances ("calling getWeather." / "getWeather returned …"): a blank line
    # between them, as a chat client shows separate text parts.
    return LoopResult(text="\n\n".join(step_texts), finish_reason=finish_reason, usage=usage, pending=pending)


def _tool_context(run: Run) -> dict[str, Any]:
    session_id = run.session.public_id if run.session else str(run.pk)
    resource_id = (run.session.resource_id if run.session else "") or run.organization.public_id
    return {"sessionId": session_id, "resourceId": resource_id}


@dataclass
class _ToolRequest:
    """One tool call of a step: its announced part, parsed input, or the error the model sees instead."""

    call: ToolCall
    part: dict[str, Any]
    tool_input: Any
    error: str | None


def _run_tools(
    *,
    run: Run,
    turn: AssistantTurn,
    calls: list[ToolCall],
    agent: AgentManifest,
    tool_names: set[str],
    context: dict[str, Any],
    cancel: CancelToken,
    usage: Usage,
) -> tuple[list[str | None], list[dict[str, Any]]]:
    """Run the tool calls of one model step: in call order, the texts the model sees as results (None
    for a call that waits for the client), and the calls that wait.

    Every call is announced first (`tool-input-available`, or the error of a call whose
    arguments are not JSON or name no tool), written before anything runs. A client-side tool's
    call waits for the client's result; a call of a tool that needs approval gets a
    `tool-approval-request` and waits for the user. The others run in the sandbox together, at
    most MAX_PARALLEL_TOOL_CALLS at a time, each bounded by the run's limits and cancel token;
    their outputs follow in call order. The calling threads touch no database (the sandbox
    settings are read here, once per step).
    """
    requests = [_tool_request(turn, call, tool_names) for call in calls]
    pending: list[dict[str, Any]] = []
    waiting: set[int] = set()
    for request in requests:
        if request.error is not None:
            continue
        name = request.call.name
        if name in agent.client_tools:
            pending.append({"toolCallId": request.call.id, "toolName": name, "kind": PENDING_CLIENT})
            waiting.add(id(request))
        elif name in agent.approval_tools:
            approval_id = approval_id_new()
            turn.approval_request(request.part, approval_id)
            pending.append(
                {
                    "toolCallId": request.call.id,
                    "toolName": name,
                    "kind": PENDING_APPROVAL,
                    "approvalId": approval_id,
                }
            )
            waiting.add(id(request))
    runnable = [request for request in requests if request.error is None and id(request) not in waiting]
    results = _invoke_all(run=run, turn=turn, requests=runnable, context=context, cancel=cancel)
    texts: list[str | None] = []
    for request in requests:
        if request.error is not None:
            texts.append(json.dumps({"error": request.error}))
        elif id(request) in waiting:
            texts.append(None)
        else:
            texts.append(_tool_result(turn, request, results[id(request)], usage))
    return texts, pending


def _invoke_all(
    *,
    run: Run,
    turn: AssistantTurn,
    requests: list[_ToolRequest],
    context: dict[str, Any],
    cancel: CancelToken,
) -> dict[int, sandbox_api.InvokeResult]:
    """Run `requests` in the sandbox (together when several); their results by `id(request)`."""
    if not requests:
        return {}
    turn.flush()
    settings_now = sandbox_settings_for(run.organization)

    def invoke(request: _ToolRequest) -> sandbox_api.InvokeResult:
        return run_tool_call(
            run=run,
            tool=request.call.name,
            tool_input=request.tool_input,
            context=context,
            cancel=cancel,
            sandbox_settings=settings_now,
        )

    if len(requests) == 1:
        return {id(requests[0]): invoke(requests[0])}
    with ThreadPoolExecutor(min(len(requests), MAX_PARALLEL_TOOL_CALLS)) as pool:
        futures = {id(request): pool.submit(invoke, request) for request in requests}
        return {key: future.result() for key, future in futures.items()}


def _resume_approved(
    *,
    run: Run,
    turn: AssistantTurn,
    agent: AgentManifest,
    context: dict[str, Any],
    cancel: CancelToken,
    usage: Usage,
) -> None:
    """A continued answer's calls the user answered: the approved ones run in the sandbox now, the
    denied ones get `tool-output-denied` (before the model's next step, as the AI SDK streams them)."""
    approved: list[_ToolRequest] = []
    for part in turn.parts:
        if part.get("state") != "approval-responded" or not isinstance(part.get("approval"), dict):
            continue
        name = str(part.get("type", ""))[len("tool-") :]
        call = ToolCall(str(part.get("toolCallId")), name, "")
        if part["approval"].get("approved") is not True:
            turn.tool_denied(part)
        elif not agent.has_tool(name) or name in agent.client_tools:
            # The active version changed since the call was approved and no longer runs that tool.
            turn.tool_error(part, f"unknown_tool: there is no tool {name!r} to run")
        else:
            approved.append(_ToolRequest(call=call, part=part, tool_input=part.get("input"), error=None))
    results = _invoke_all(run=run, turn=turn, requests=approved, context=context, cancel=cancel)
    for request in approved:
        _tool_result(turn, request, results[id(request)], usage)


def _tool_request(turn: AssistantTurn, call: ToolCall, tool_names: set[str]) -> _ToolRequest:
    """Parse and announce one call; a call that cannot run gets its tool error at once."""
    try:
        tool_input: Any = clean_value(json.loads(call.arguments)) if call.arguments.strip() else {}
        input_error = None
    except (ValueError, RecursionError) as exc:
        tool_input = call.arguments
        input_error = f"invalid_input: the tool arguments are not valid JSON ({exc})"
    part = turn.tool_input(call, tool_input)
    if input_error is None and call.name not in tool_names:
        input_error = f"unknown_tool: there is no tool {call.name!r}; tools: {', '.join(sorted(tool_names))}"
    if input_error is not None:
        turn.tool_error(part, input_error)
    return _ToolRequest(call=call, part=part, tool_input=tool_input, error=input_error)


def _tool_result(
    turn: AssistantTurn, request: _ToolRequest, result: sandbox_api.InvokeResult, usage: Usage
) -> str:
    """Record one sandbox call's outcome as events and usage; returns the text the model sees."""
    usage.add_sandbox(result.usage)
    if result.logs:
        logs = result.logs[:MAX_LOG_ENTRIES]
        turn.log(request.call.id, logs)
    if result.ok:
        turn.tool_output(request.part, result.output)
        return json.dumps(result.output, separators=(",", ":"))
    error = result.error or {"type": "sandbox_crash", "message": "the sandbox gave no error"}
    error_text = f"{error.get('type')}: {error.get('message')}"
    turn.tool_error(request.part, error_text)
    return json.dumps({"error": error}, separators=(",", ":"))


def run_tool_call(
    *,
    run: Run,
    tool: str,
    tool_input: Any,
    context: dict[str, Any],
    cancel: CancelToken,
    sandbox_settings: SandboxSettings | None = None,
) -> sandbox_api.InvokeResult:
    """One sandbox call for the run (`agents.services.tool_call`), within the run's remaining wall time."""
    started = time.monotonic()
    result = tool_call(
        organization=run.organization,
        version=run.bundle_version,
        agent_key=run.agent_key,
        tool=tool,
        tool_input=tool_input,
        context=context,
        timeout_ms=max(1, _remaining_ms(run)),
        cancel=cancel.event,
        sandbox_settings=sandbox_settings,
    )
    logger.debug("run %s tool %s took %.1f ms", run.pk, tool, (time.monotonic() - started) * 1000)
    return result


def _remaining_ms(run: Run) -> int:
    if run.started_at is None:
        return int(run.wall_limit_ms)
    elapsed = (timezone.now() - run.started_at).total_seconds() * 1000
    return int(run.wall_limit_ms - elapsed)
