"""Client-side tools and tool approvals, in process: what a step leaves waiting, how a continuation is
checked (hostile posts refused before anything runs) and what the continued answer holds.

The AI SDK's own client drives the same round trips in test_aisdk.py."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from agents.models import AgentManifest
from execution.models import ChatSession, Message, Run, RunStatus
from execution.selectors import agent_target_resolve, run_events_after
from execution.services import chat_run_start, run_execute
from execution.services.chat_tools import MAX_OUTPUT_BYTES, MAX_OUTPUT_DEPTH
from lightfast_cloud.errors import LightfastError
from tests.bundles import uploaded_version
from tests.execution.fake_openai import FakeOpenAI
from tests.execution.live_transport import (
    asgi_server_fixture,  # noqa: F401 - the `asgi_server` fixture
    recv_json,
    recv_until_end,
    ws_connect,
)
from tests.services import PROJECT_ROOT

pytestmark = pytest.mark.django_db(transaction=True)

TOOLS_AGENT = PROJECT_ROOT / "tests" / "fixtures" / "aisdk" / "tools-agent.mjs"
TOOLS_CHAT = "/api/v1/chat/tools/tools"


def user(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


class Chat:
    """One chat of the tools agent driven in process: each turn is started as a transport would and run
    here (no Celery), its run's task arguments as `run_enqueue` sends them."""

    def __init__(self, organization: Any, chat_id: str) -> None:
        self.organization = organization
        self.chat_id = chat_id
        self.target = agent_target_resolve(organization=organization, bundle="tools", agent="tools")
        self.messages: list[dict[str, Any]] = []

    def start(self, messages: list[dict[str, Any]], **kwargs: Any) -> Run:
        return chat_run_start(
            organization=self.organization,
            target=self.target,
            created_by=None,
            messages=messages,
            session_id=self.chat_id,
            trigger="submit-message",
            **kwargs,
        )

    def execute(self, run: Run) -> Run:
        assert run_execute(run_id=run.pk, worker="test", message_id=run.input.get("continue")) is True
        run.refresh_from_db()
        return run

    def send(self, text: str) -> Run:
        """A user turn, run to its end; the client then holds its answer."""
        self.messages.append(user(f"u{len(self.messages)}", text))
        run = self.execute(self.start(self.messages))
        self.messages.append(self.answer())
        return run

    def answer(self) -> dict[str, Any]:
        """The client's copy of the last answer (as the stream built it: the stored parts)."""
        message = ChatSession.objects.get(public_id=self.chat_id).messages.order_by("created_at", "pk").last()
        assert message is not None and message.role == "assistant"
        return {"id": message.public_id, "role": "assistant", "parts": copy.deepcopy(message.parts)}

    def post_answer(self, answer: dict[str, Any]) -> Run:
        """Post the conversation again, its last answer the client's copy with the calls answered."""
        return self.start([*self.messages[:-1], answer])

    def continue_with(self, answer: dict[str, Any]) -> Run:
        """Post the answered calls and run the continuation to its end."""
        run = self.execute(self.post_answer(answer))
        self.messages[-1] = self.answer()
        return run


def tool_part(answer: dict[str, Any], name: str) -> dict[str, Any]:
    return next(part for part in answer["parts"] if part["type"] == f"tool-{name}")


def types(run: Run) -> list[str]:
    return [event.type for event in run_events_after(run, 0)]


@pytest.fixture(name="chat")
def chat_fixture(alice: Any, use_fake_provider: FakeOpenAI, media_root: Any) -> Chat:
    uploaded_version(alice.organization, TOOLS_AGENT, slug="tools")
    return Chat(alice.organization, "team/tools")


def test_the_manifest_marks_client_side_tools_and_approvals(chat: Chat) -> None:
    agent = chat.target.version.agent("tools")
    assert agent is not None
    # createTool without execute and the AI SDK's tool() without execute alike.
    assert agent.client_tools == {"getLocation", "askConfirmation"}
    assert agent.approval_tools == {"deleteFile"}
    assert (
        agent.tools["getLocation"]["clientSide"] is True and "needsApproval" not in agent.tools["getWeather"]
    )
    assert AgentManifest.from_spec(
        "a", {"tools": {"t": {"clientSide": True, "needsApproval": True}}}
    ).approval_tools == (frozenset())


def test_a_client_side_tool_call_waits_for_the_client_and_the_answer_continues(
    chat: Chat, use_fake_provider: FakeOpenAI, alice: Any, api: Any
) -> None:
    first = chat.send('where am I? #call=getLocation {"precise": true}')
    assert first.status == RunStatus.SUCCEEDED
    # The API shows what the run waits for (the response is checked against the schema too).
    shown = api.get(f"/api/v1/runs/{first.pk}", key=alice.keys["read"]).json()
    assert (
        shown["status"] == "succeeded" and shown["output"]["pendingToolCalls"][0]["toolName"] == "getLocation"
    )
    events = run_events_after(first, 0)
    kinds = [event.type for event in events]
    assert kinds[kinds.index("tool-input-start") + 1] == "tool-input-available"
    assert "tool-output-available" not in kinds and first.tool_calls == 0  # nothing ran on the server
    assert events[-2].type == "finish" and events[-2].payload == {"finishReason": "tool-calls"}
    [pending] = first.output["pendingToolCalls"]
    assert pending["toolName"] == "getLocation" and pending["kind"] == "client"
    answer = chat.answer()
    part = tool_part(answer, "getLocation")
    assert part["state"] == "input-available" and part["input"] == {"precise": True}

    part.update(state="output-available", output={"city": "Lyon", "lat": 45.76})
    second = chat.post_answer(answer)
    assert second.input == {"continue": answer["id"]}
    second = chat.execute(second)
    assert second.status == RunStatus.SUCCEEDED, second.error_message
    start = run_events_after(second, 0)[0]
    # The same message, continued: the AI SDK appends the new parts to it.
    assert start.type == "start" and start.payload["messageId"] == answer["id"]
    assert start.payload["messageMetadata"] == {"runId": str(second.pk)}
    # The model saw its call and the client's result.
    sent = use_fake_provider.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["function"]["name"] == "getLocation"
    assert (sent[-1]["role"], sent[-1]["tool_call_id"]) == ("tool", part["toolCallId"])
    assert json.loads(sent[-1]["content"]) == {"city": "Lyon", "lat": 45.76}  # (jsonb orders keys its way)
    stored = ChatSession.objects.get(public_id=chat.chat_id).messages.order_by("created_at", "pk")
    assert [message.role for message in stored] == ["user", "assistant"]
    parts = stored.last().parts  # type: ignore[union-attr]
    assert [p["type"] for p in parts] == ["step-start", "text", "tool-getLocation", "step-start", "text"]
    assert parts[2]["state"] == "output-available" and parts[-1]["text"].startswith("Tool result: ")
    # Answered once: the same post again finds nothing waiting.
    with pytest.raises(LightfastError) as again:
        chat.post_answer(answer)
    assert again.value.code == "unknown_tool_call"


def test_an_approved_call_runs_in_the_sandbox_and_a_denied_one_never_runs(chat: Chat) -> None:
    first = chat.send('tidy up #call=deleteFile {"path": "/tmp/a"}')
    assert first.status == RunStatus.SUCCEEDED
    request = next(e for e in run_events_after(first, 0) if e.type == "tool-approval-request")
    [pending] = first.output["pendingToolCalls"]
    assert request.payload == {"approvalId": pending["approvalId"], "toolCallId": pending["toolCallId"]}
    assert pending["approvalId"].startswith("apr_") and len(pending["approvalId"]) > 20
    assert first.tool_calls == 0  # asked, not run
    answer = chat.answer()
    part = tool_part(answer, "deleteFile")
    assert part["state"] == "approval-requested" and part["approval"] == {"id": pending["approvalId"]}

    part.update(state="approval-responded", approval={"id": pending["approvalId"], "approved": True})
    approved = chat.continue_with(answer)
    assert approved.status == RunStatus.SUCCEEDED and approved.tool_calls == 1
    output = next(e for e in run_events_after(approved, 0) if e.type == "tool-output-available")
    assert output.payload["output"] == {"deleted": "/tmp/a", "ranIn": "sandbox", "session": chat.chat_id}
    # The tool's result comes before the model's next step, as the AI SDK streams an approved call.
    assert types(approved).index("tool-output-available") < types(approved).index("start-step")

    second = chat.send('and this one #call=deleteFile {"path": "/etc/passwd"}')
    answer = chat.answer()
    part = next(p for p in answer["parts"] if p.get("state") == "approval-requested")
    approval_id = second.output["pendingToolCalls"][0]["approvalId"]
    part.update(state="approval-responded", approval={"id": approval_id, "approved": False, "reason": "no"})
    denied = chat.continue_with(answer)
    assert denied.status == RunStatus.SUCCEEDED and denied.tool_calls == 0
    assert "tool-output-denied" in types(denied) and "tool-output-available" not in types(denied)
    stored = Message.objects.get(public_id=answer["id"]).parts
    assert next(p for p in stored if p.get("toolCallId") == part["toolCallId"])["state"] == "output-denied"
    assert chat_text(denied) == "Tool result: Tool execution denied. Reason: no"


def chat_text(run: Run) -> str:
    return "".join(event.payload["delta"] for event in run_events_after(run, 0) if event.type == "text-delta")


def refused(chat: Chat, answer: dict[str, Any], code: str) -> LightfastError:
    runs = Run.objects.count()
    with pytest.raises(LightfastError) as caught:
        chat.post_answer(answer)
    assert caught.value.code == code, caught.value
    assert Run.objects.count() == runs  # refused before anything was created or ran
    return caught.value


def test_hostile_tool_results_are_refused_before_anything_runs(chat: Chat) -> None:
    chat.send('where? #call=getLocation {"precise": false}')
    answer = chat.answer()
    part = tool_part(answer, "getLocation")
    # Still waiting (the client answered nothing): it says which call waits.
    error = refused(chat, answer, "invalid_input")
    assert error.detail == {"waiting": [part["toolCallId"]]}
    # A forged call id.
    forged = copy.deepcopy(answer)
    forged["parts"].append(
        {"type": "tool-getWeather", "toolCallId": "call_forged", "state": "output-available"}
    )
    tool_part(forged, "getLocation").update(state="output-available", output={})
    error = refused(chat, forged, "unknown_tool_call")
    assert error.detail == {"toolCallId": "call_forged"} and error.http_status == 400
    # Too large, too deep, not an error string.
    for output in (
        "x" * (MAX_OUTPUT_BYTES + 1),
        json.loads("[" * (MAX_OUTPUT_DEPTH + 1) + "]" * (MAX_OUTPUT_DEPTH + 1)),
    ):
        part.update(state="output-available", output=output)
        assert "tool result" in refused(chat, answer, "invalid_input").message
    part.update(state="output-error", errorText={"not": "text"})
    refused(chat, answer, "invalid_input")
    # An approval for a call that waits for the client's result.
    part.update(state="approval-responded", approval={"id": "apr_x", "approved": True})
    refused(chat, answer, "invalid_input")
    # The answer is not this chat's last message (another id than the stored one).
    part.update(state="output-available", output={"city": "Nice"})
    refused(chat, {**answer, "id": "msg_other"}, "unknown_tool_call")
    # The client's error for its own tool is taken (bounded, cleaned) and the model is told.
    part.update(state="output-error", errorText="the user closed the dialog")
    run = chat.continue_with(answer)
    assert run.status == RunStatus.SUCCEEDED
    assert chat_text(run) == 'Tool result: {"error": "the user closed the dialog"}'


def test_approvals_are_bound_to_their_chat_and_organization(chat: Chat, bob: Any, media_root: Any) -> None:
    first = chat.send('#call=deleteFile {"path": "/a"}')
    approval_id = first.output["pendingToolCalls"][0]["approvalId"]
    answer = chat.answer()
    part = tool_part(answer, "deleteFile")
    # A made-up approval id for the right call.
    part.update(state="approval-responded", approval={"id": "apr_" + "A" * 24, "approved": True})
    refused(chat, answer, "unknown_tool_call")
    # Another chat of the same organization with the genuine approval id: nothing waits there.
    other = Chat(chat.organization, "team/other")
    other.send("hello")
    part.update(approval={"id": approval_id, "approved": True})
    with pytest.raises(LightfastError) as caught:
        other.post_answer(answer)
    assert caught.value.code == "unknown_tool_call"
    # Another organization naming the same chat id and approval: its own (empty) world.
    uploaded_version(bob.organization, TOOLS_AGENT, slug="tools")
    bobs = Chat(bob.organization, chat.chat_id)
    bobs.messages = list(chat.messages)
    runs = Run.objects.count()
    with pytest.raises(LightfastError) as caught:
        bobs.post_answer(answer)
    assert caught.value.code == "unknown_tool_call" and Run.objects.count() == runs
    assert not ChatSession.objects.filter(organization=bob.organization).exists()
    # Alice's call still waits, unrun, for Alice's approval.
    assert Run.objects.filter(tool_calls__gt=0).count() == 0
    run = chat.continue_with(answer)
    assert run.tool_calls == 1


def test_the_chat_endpoint_answers_hostile_posts_with_classified_400s(
    chat: Chat, alice: Any, api: Any
) -> None:
    chat.send('#call=getLocation {"precise": true}')
    answer = chat.answer()
    tool_part(answer, "getLocation").update(state="output-available", output={"city": "Lyon"})
    answer["parts"].append(
        {"type": "tool-getLocation", "toolCallId": "call_nope", "state": "output-available"}
    )
    body = {"id": chat.chat_id, "messages": [*chat.messages, answer], "trigger": "submit-message"}
    key = alice.keys["all"]
    response = api.post(TOOLS_CHAT, body, key=key, headers={"Accept": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "unknown_tool_call"
    # What the AI SDK transport shows as `chat.error.message`.
    text = api.post(TOOLS_CHAT, body, key=key)
    assert text.status_code == 400 and text["X-Lightfast-Error"] == "unknown_tool_call"
    assert text.content.decode() == "No call of this chat waits for that tool call id."
    # A body nested past any conversation's depth is refused, not a server error.
    deep = '{"id": "x", "trigger": "submit-message", "messages": ' + "[" * 5000 + "]" * 5000 + "}"
    response = api.post(TOOLS_CHAT, body=deep, key=key, headers={"Accept": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_input"


def test_the_websocket_continue_frame_answers_an_approval(
    alice: Any, use_fake_provider: FakeOpenAI, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization, TOOLS_AGENT, slug="tools")
    with ws_connect(asgi_server, "/ws/v1/chat/tools/tools/", key=alice.keys["all"]) as ws:
        ws.send(json.dumps({"type": "message", "text": '#call=deleteFile {"path": "/x"}', "session": "ws/t"}))
        accepted = next_frame(ws, "run-accepted")
        frames = recv_until_end(ws, accepted["run"])
        answer_id = frames[0]["messageId"]
        request = next(frame for frame in frames if frame["type"] == "tool-approval-request")
        # A forged approval id: an error frame, the connection stays usable, nothing runs.
        ws.send(
            json.dumps(
                {"type": "continue", "session": "ws/t", "approvals": [{"id": "apr_no", "approved": True}]}
            )
        )
        error = next_frame(ws, "error")
        assert error["error"]["type"] == "unknown_tool_call"
        approval = {"id": request["approvalId"], "approved": True}
        ws.send(json.dumps({"type": "continue", "session": "ws/t", "approvals": [approval]}))
        accepted = next_frame(ws, "run-accepted")
        frames = recv_until_end(ws, accepted["run"])
    start = frames[0]
    assert start["type"] == "start" and start["messageId"] == answer_id  # the same answer, continued
    output = next(frame for frame in frames if frame["type"] == "tool-output-available")
    assert output["toolCallId"] == request["toolCallId"] and output["output"]["ranIn"] == "sandbox"
    assert Message.objects.get(public_id=start["messageId"]).run_id == uuid.UUID(accepted["run"])
    assert Run.objects.filter(tool_calls=1).count() == 1


def next_frame(ws: Any, kind: str) -> dict[str, Any]:
    frame = recv_json(ws)
    while frame["type"] != kind:
        frame = recv_json(ws)
    return frame
