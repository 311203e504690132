"""Continuing a chat answer that waits for its client: client-side tool results and tool approvals."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from execution.agent_loop import PENDING_APPROVAL, PENDING_CLIENT
from execution.models import ChatSession, Message, MessageRole, Run, RunStatus
from execution.sandbox.frames import check_depth
from execution.sandbox.protocol import FrameViolation
from execution.sandbox.values import clean_text, clean_value
from execution.selectors import AgentTarget, session_get
from execution.services.messages import chat_session_lock
from execution.services.runs import run_start
from execution.write_gate import write_transaction
from lightfast_cloud.errors import LightfastError
from organizations.models import Organization

# Bounds of what a client may post for one call: its result (JSON, as sent to the model and stored
# with the answer), a failed call's text, an approval's reason.
MAX_OUTPUT_BYTES = 256 * 1024
MAX_OUTPUT_DEPTH = 64
MAX_ERROR_TEXT_CHARS = 4000
MAX_REASON_CHARS = 2000
MAX_ID_CHARS = 200
# The most calls one step can leave waiting that one request may answer.
MAX_RESPONSES = 128

NOTHING_WAITS = "Nothing in this chat waits for a tool result or an approval."


class UnknownToolCall(LightfastError):
    """A tool result or approval for no call this chat's answer waits for (forged, stale, another chat's)."""

    code = "unknown_tool_call"
    default_message = NOTHING_WAITS


@dataclass(frozen=True)
class ToolResponse:
    """The client's answer to one waiting call: a result (`output`), a failure (`error_text`) or, for a
    call that needs approval, the user's decision (`approval_id`, `approved`, `reason`)."""

    tool_call_id: str
    output: Any = None
    error_text: str | None = None
    approval_id: str | None = None
    approved: bool = False
    reason: str | None = None

    @property
    def is_approval(self) -> bool:
        """An approval response (else a result)."""
        return self.approval_id is not None


def tool_responses_from_message(message: Any) -> list[ToolResponse]:
    """The results and approval responses in the client's copy of the answer (an AI SDK UI message).

    Tool parts (`tool-<name>`, `dynamic-tool`) in state `output-available` / `output-error` give a
    result, `approval-responded` an approval response; parts still waiting give nothing (the
    continuation then names them). Which of them the server takes is decided against its own
    record (`chat_run_continue`): the client's copy of calls that ran on the server is ignored.
    """
    parts = message.get("parts") if isinstance(message, dict) else None
    if not isinstance(parts, list):
        raise LightfastError(code="invalid_input", message="`parts` must be a list.")
    responses: list[ToolResponse] = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if not isinstance(kind, str) or not (kind.startswith("tool-") or kind == "dynamic-tool"):
            continue
        state = part.get("state")
        call_id = _call_id(part.get("toolCallId"))
        if state == "output-available":
            responses.append(ToolResponse(call_id, output=part.get("output")))
        elif state == "output-error":
            responses.append(ToolResponse(call_id, error_text=_error_text(part.get("errorText"))))
        elif state == "approval-responded":
            approval = part.get("approval")
            if not isinstance(approval, dict):
                raise LightfastError(code="invalid_input", message="An approval response needs `approval`.")
            responses.append(_approval(call_id, approval))
    return responses


def tool_responses_from_frame(frame: dict[str, Any]) -> tuple[list[ToolResponse], list[dict[str, Any]]]:
    """The websocket `continue` frame's `toolOutputs` ({toolCallId, output} or {toolCallId, errorText})
    and `approvals` ({id, approved, reason?}); approvals are matched to their calls by id later."""
    outputs, approvals = frame.get("toolOutputs", []), frame.get("approvals", [])
    if not isinstance(outputs, list) or not isinstance(approvals, list):
        raise LightfastError(code="invalid_frame", message="`toolOutputs` and `approvals` must be lists.")
    responses: list[ToolResponse] = []
    for item in outputs:
        if not isinstance(item, dict):
            raise LightfastError(code="invalid_frame", message="Each tool output must be an object.")
        call_id = _call_id(item.get("toolCallId"))
        if "errorText" in item:
            responses.append(ToolResponse(call_id, error_text=_error_text(item["errorText"])))
        elif "output" in item:
            responses.append(ToolResponse(call_id, output=item["output"]))
        else:
            raise LightfastError(code="invalid_frame", message="A tool output needs `output` or `errorText`.")
    for item in approvals:
        if not isinstance(item, dict):
            raise LightfastError(code="invalid_frame", message="Each approval must be an object.")
    return responses, approvals


def chat_run_continue(
    *,
    organization: Organization,
    target: AgentTarget,
    created_by: Any,
    session_id: str | None,
    responses: list[ToolResponse],
    approvals_by_id: list[dict[str, Any]] | None = None,
    answer_id: str | None = None,
) -> Run:
    """Continue the chat's last answer once the client answered every call it waits for.

    The answer must be the session's last message (`answer_id`, when the client names it, must be
    its id), written by a run that succeeded with `pendingToolCalls`. Every response must name one
    of those calls (a result for a client-side tool, the approval id the server issued for a call
    that needs approval), every waiting call must get one, and nothing else may be posted; the
    answer's parts then record them (`output-available`, `output-error`, `approval-responded`) and a
    run continues the same message: approved calls run in the sandbox, denied ones are reported to
    the model, and the model answers on (`agent_loop`). Anything else is refused before anything
    runs: `unknown_tool_call` (400) for a call this chat does not wait for, `invalid_input` for a
    malformed, oversized or incomplete answer.
    """
    if not isinstance(session_id, str) or not 0 < len(session_id) <= 200:
        raise LightfastError(code="invalid_input", message="Continuing an answer needs the chat `id`.")
    if len(responses) + len(approvals_by_id or []) > MAX_RESPONSES:
        raise LightfastError(code="invalid_input", message=f"At most {MAX_RESPONSES} tool responses at once.")
    with write_transaction():
        chat_session_lock(organization=organization, public_id=session_id)
        session = session_get(organization=organization, public_id=session_id)
        if session is None or session.agent != target.agent_id:
            raise UnknownToolCall()
        answer, pending = _waiting_answer(session, answer_id)
        recorded = {
            part["toolCallId"]
            for part in answer.parts or []
            if isinstance(part, dict) and isinstance(part.get("toolCallId"), str)
        }
        by_call = _match(pending, recorded, responses, approvals_by_id or [])
        parts = _answered_parts(answer, pending, by_call)
        run = run_start(
            organization=organization,
            bundle_version=target.version,
            agent_key=target.agent_key,
            session=session,
            continue_message=answer.public_id,
            created_by=created_by,
            savepoint=False,  # its refusal fails this whole transaction
        )
        # The answer now belongs to the run continuing it: a second post of the same results finds
        # nothing waiting (that run has not ended with calls of its own).
        Message.objects.filter(pk=answer.pk).update(parts=parts, run=run)
        ChatSession.objects.filter(pk=session.pk).update(updated_at=timezone.now())
    return run


def _waiting_answer(session: ChatSession, answer_id: str | None) -> tuple[Message, list[dict[str, Any]]]:
    """The session's last message and the calls it waits for; refused when it waits for none."""
    answer = session.messages.order_by("-created_at", "-pk").first()
    if answer is None or answer.role != MessageRole.ASSISTANT or answer.run_id is None:
        raise UnknownToolCall()
    if answer_id is not None and answer.public_id != answer_id:
        raise UnknownToolCall(
            "The answer these tool results are for is not this chat's last message.",
            detail={"messageId": clean_text(answer_id[:MAX_ID_CHARS])},
        )
    run = Run.objects.filter(pk=answer.run_id, session=session).only("status", "output").first()
    output = run.output if run is not None and run.status == RunStatus.SUCCEEDED else None
    pending = output.get("pendingToolCalls") if isinstance(output, dict) else None
    if not isinstance(pending, list) or not pending:
        raise UnknownToolCall()
    return answer, [entry for entry in pending if isinstance(entry, dict)]


def _match(
    pending: list[dict[str, Any]],
    recorded: set[str],
    responses: list[ToolResponse],
    approvals_by_id: list[dict[str, Any]],
) -> dict[str, ToolResponse]:
    """Each waiting call's response, by tool call id; refuses forged, duplicate and missing ones.

    `recorded`: the tool call ids of the answer's parts (a response for one of them that does not
    wait is the client's copy of a call that ran on the server, and is ignored)."""
    waiting = {str(entry.get("toolCallId")): entry for entry in pending}
    by_call: dict[str, ToolResponse] = {}
    for approval in approvals_by_id:
        # The websocket names an approval by its id only: find the call it was issued for.
        approval_id = approval.get("id")
        entry = next(
            (
                e
                for e in pending
                if e.get("kind") == PENDING_APPROVAL
                and isinstance(approval_id, str)
                and hmac.compare_digest(str(e.get("approvalId", "")), approval_id)
            ),
            None,
        )
        if entry is None:
            raise UnknownToolCall(
                "No call of this chat waits for that approval.", detail={"approvalId": _shown(approval_id)}
            )
        responses = [*responses, _approval(str(entry["toolCallId"]), approval)]
    for response in responses:
        entry = waiting.get(response.tool_call_id)
        if entry is None:
            if response.tool_call_id in recorded:
                continue  # the client's copy of a call the server ran: the server's record wins
            raise UnknownToolCall(
                "No call of this chat waits for that tool call id.",
                detail={"toolCallId": _shown(response.tool_call_id)},
            )
        if response.tool_call_id in by_call:
            raise LightfastError(
                code="invalid_input",
                message="A tool call was answered twice.",
                detail={"toolCallId": _shown(response.tool_call_id)},
            )
        if entry.get("kind") == PENDING_APPROVAL:
            if not response.is_approval or not hmac.compare_digest(
                str(entry.get("approvalId", "")), response.approval_id or ""
            ):
                raise UnknownToolCall(
                    "That call waits for the user's approval, with the approval id the server issued.",
                    detail={"toolCallId": _shown(response.tool_call_id)},
                )
        elif entry.get("kind") == PENDING_CLIENT:
            if response.is_approval:
                raise LightfastError(
                    code="invalid_input",
                    message="That call waits for the client's result, not an approval.",
                    detail={"toolCallId": _shown(response.tool_call_id)},
                )
            _check_output(response)
        by_call[response.tool_call_id] = response
    missing = [call_id for call_id in waiting if call_id not in by_call]
    if missing:
        raise LightfastError(
            code="invalid_input",
            message="Every waiting tool call needs its result or approval response to continue.",
            detail={"waiting": missing},
        )
    return by_call


def _answered_parts(
    answer: Message, pending: list[dict[str, Any]], by_call: dict[str, ToolResponse]
) -> list[dict[str, Any]]:
    """The answer's parts with the client's results and the user's decisions recorded."""
    kinds = {str(entry.get("toolCallId")): entry.get("kind") for entry in pending}
    parts: list[dict[str, Any]] = []
    for stored in answer.parts or []:
        part = dict(stored)
        response = by_call.get(str(part.get("toolCallId")))
        if response is not None and kinds.get(str(part.get("toolCallId"))) is not None:
            if response.is_approval:
                part["state"] = "approval-responded"
                part["approval"] = {
                    "id": response.approval_id,
                    "approved": response.approved,
                    **({"reason": response.reason} if response.reason is not None else {}),
                }
            elif response.error_text is not None:
                part.update(state="output-error", errorText=response.error_text)
            else:
                part.update(state="output-available", output=clean_value(response.output))
        parts.append(part)
    return parts


def _check_output(response: ToolResponse) -> None:
    """A client's tool result is hostile input: bounded in size and nesting before it is stored."""
    if response.error_text is not None:
        return
    try:
        text = json.dumps(response.output, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise LightfastError(code="invalid_input", message="A tool result must be a JSON value.") from exc
    if len(text) > MAX_OUTPUT_BYTES:
        raise LightfastError(
            code="invalid_input",
            message=f"A tool result exceeds {MAX_OUTPUT_BYTES // 1024} KiB.",
            detail={"toolCallId": _shown(response.tool_call_id), "limit_bytes": MAX_OUTPUT_BYTES},
        )
    try:
        check_depth(text, MAX_OUTPUT_DEPTH)
    except FrameViolation as exc:
        raise LightfastError(
            code="invalid_input",
            message=f"A tool result nests deeper than {MAX_OUTPUT_DEPTH} levels.",
            detail={"toolCallId": _shown(response.tool_call_id)},
        ) from exc


def _approval(call_id: str, approval: dict[str, Any]) -> ToolResponse:
    approval_id, approved, reason = approval.get("id"), approval.get("approved"), approval.get("reason")
    if not isinstance(approval_id, str) or not 0 < len(approval_id) <= MAX_ID_CHARS:
        raise LightfastError(code="invalid_input", message="An approval response needs its approval `id`.")
    if not isinstance(approved, bool):
        raise LightfastError(code="invalid_input", message="`approved` must be true or false.")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS):
        raise LightfastError(
            code="invalid_input",
            message=f"`reason` must be a string of at most {MAX_REASON_CHARS} characters.",
        )
    return ToolResponse(
        call_id,
        approval_id=approval_id,
        approved=approved,
        reason=clean_text(reason) if isinstance(reason, str) else None,
    )


def _call_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise LightfastError(
            code="invalid_input", message=f"`toolCallId` must be a string of 1 to {MAX_ID_CHARS} characters."
        )
    return value


def _error_text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_ERROR_TEXT_CHARS:
        raise LightfastError(
            code="invalid_input",
            message=f"`errorText` must be a string of at most {MAX_ERROR_TEXT_CHARS} characters.",
        )
    return clean_text(value)


def _shown(value: Any) -> str | None:
    """An id the client sent, safe to echo in an error's detail."""
    return clean_text(value[:MAX_ID_CHARS]) if isinstance(value, str) else None
