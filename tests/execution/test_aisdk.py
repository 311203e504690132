"""Acceptance: the AI SDK's own chat client (ai 5 and 6, run in Node) against a live web server + worker.

The drivers are tests/fixtures/aisdk/chat-driver.mjs; the model is the fake OpenAI server, so what the
model was sent is asserted exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest

from execution.models import ChatSession, Run, RunStatus
from tests.execution.conftest import uploaded_version
from tests.execution.live_transport import asgi_server_fixture  # noqa: F401 - the `asgi_server` fixture
from tests.services import PROJECT_ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("node") is None, reason="the AI SDK client runs in Node"),
]

DRIVER = PROJECT_ROOT / "tests" / "fixtures" / "aisdk" / "chat-driver.mjs"
SLOW_AGENT = PROJECT_ROOT / "tests" / "fixtures" / "aisdk" / "slow-agent.mjs"
WEATHER_CHAT = "/api/v1/chat/weather/weather"
SLOW_CHAT = "/api/v1/chat/slow/slow"
# ai 5 is the `ai` devDependency, ai 6 the `ai6` alias (package.json pins both).
AI_MODULES = ["ai", "ai6"]


def drive(
    scenario: str,
    *,
    module: str,
    asgi_server: Any,
    key: str,
    chat_id: str,
    texts: list[str],
    path: str = WEATHER_CHAT,
    extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run one driver scenario; its JSON result."""
    env = {
        **os.environ,
        "AI_MODULE": module,
        "BASE": asgi_server.http,
        "KEY": key,
        "CHAT_PATH": path,
        "CHAT_ID": chat_id,
        "TEXTS": json.dumps(texts),
        **(extra_env or {}),
    }
    completed = subprocess.run(
        ["node", str(DRIVER), scenario],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def stored(organization: Any, chat_id: str) -> list[tuple[str, str]]:
    """(role, text) of the stored session, in history order."""
    session = ChatSession.objects.get(organization=organization, public_id=chat_id)
    return [(message.role, message.text()) for message in session.messages.order_by("created_at", "pk")]


def model_saw(request: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, content) of what one model request carried, without the system prompt."""
    return [(m["role"], m.get("content") or "") for m in request["messages"] if m["role"] != "system"]


@pytest.fixture(name="quick_keepalive")
def quick_keepalive_fixture(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short keep-alive interval, for this process and the web server started afterwards."""
    settings.LIGHTFAST_STREAM_KEEPALIVE_S = 0.3
    monkeypatch.setenv("LIGHTFAST_STREAM_KEEPALIVE_S", "0.3")


@pytest.mark.parametrize("module", AI_MODULES)
def test_stop_cancels_the_run_and_the_next_message_keeps_history_ordered(
    module: str, alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    chat_id = f"team/{module}/stop"
    result = drive(
        "stop",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=["wait for it #hang", "second question"],
    )
    # The `start` chunk's metadata named the run; stop() cancelled it within a second.
    assert result["runId"] and result["status"] == "cancelled"
    assert result["cancelledAfterMs"] < 1000, result["cancelledAfterMs"]
    assert result["afterStop"]["error"] is None
    assert [(m["role"], m["text"]) for m in result["afterStop"]["messages"]] == [
        ("user", "wait for it #hang"),
        ("assistant", "Thinking"),
    ]
    assert result["afterStop"]["messages"][1]["metadata"] == {"runId": result["runId"]}
    expected = [
        ("user", "wait for it #hang"),
        ("assistant", "Thinking"),
        ("user", "second question"),
        ("assistant", "Echo: second question"),
    ]
    assert [(m["role"], m["text"]) for m in result["final"]["messages"]] == expected
    # The stored history is the client's, in the order the turns started (a reload shows the same).
    assert stored(alice.organization, chat_id) == expected
    assert model_saw(use_fake_provider.requests[-1]) == expected[:3]


def test_send_right_after_stop_keeps_history_ordered(
    alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    chat_id = "team/stop-send"
    result = drive(
        "stop",
        module="ai",
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=["wait for it #hang", "second question"],
        extra_env={"SEND_AT_ONCE": "1"},
    )
    expected = [
        ("user", "wait for it #hang"),
        ("assistant", "Thinking"),
        ("user", "second question"),
        ("assistant", "Echo: second question"),
    ]
    assert [(m["role"], m["text"]) for m in result["final"]["messages"]] == expected
    assert model_saw(use_fake_provider.requests[-1]) == expected[:3]
    # The stopped run ends cancelled and its partial answer is stored once, before the second turn.
    deadline = time.monotonic() + 10
    while Run.objects.get(pk=result["runId"]).status != RunStatus.CANCELLED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Run.objects.get(pk=result["runId"]).status == RunStatus.CANCELLED
    assert stored(alice.organization, chat_id) == expected


@pytest.mark.parametrize("module", AI_MODULES)
def test_regenerate_sends_the_model_the_truncated_history(
    module: str, alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    chat_id = f"team/{module}/regenerate"
    result = drive(
        "regenerate",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=["first", "second"],
    )
    before, final = result["before"]["messages"], result["final"]["messages"]
    assert [m["role"] for m in final] == ["user", "assistant", "user", "assistant"]
    assert final[-1]["id"] != before[-1]["id"] and final[-1]["text"] == "Echo: second"
    # The model saw the question once and not the answer it replaces.
    assert model_saw(use_fake_provider.requests[-1]) == [
        ("user", "first"),
        ("assistant", "Echo: first"),
        ("user", "second"),
    ]
    assert stored(alice.organization, chat_id) == [(m["role"], m["text"]) for m in final]


@pytest.mark.parametrize("module", AI_MODULES)
def test_editing_the_first_message_drops_what_followed(
    module: str, alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    chat_id = f"team/{module}/edit"
    result = drive(
        "edit",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=["one", "two", "one, edited"],
    )
    final = [(m["role"], m["text"]) for m in result["final"]["messages"]]
    assert final == [("user", "one, edited"), ("assistant", "Echo: one, edited")]
    assert model_saw(use_fake_provider.requests[-1]) == [("user", "one, edited")]
    assert stored(alice.organization, chat_id) == final


@pytest.mark.parametrize("module", AI_MODULES)
def test_resume_on_a_chat_the_server_never_saw_is_204(
    module: str, alice: Any, media_root: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    result = drive(
        "resume",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["read"],
        chat_id="team/fresh-chat",
        texts=[],
    )
    assert result["reconnectStatus"] == 204
    assert result["final"] == {"status": "ready", "error": None, "messages": []}


@pytest.mark.parametrize("module", AI_MODULES)
def test_a_refused_request_shows_a_readable_error(
    module: str, alice: Any, media_root: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization)
    result = drive(
        "refused",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["read"],
        chat_id="team/refused",
        texts=["hi"],
    )
    assert result["final"]["status"] == "error"
    assert result["final"]["error"] == "This action needs the `execute` scope."


def test_keepalive_comments_flow_during_a_slow_tool_call(
    alice: Any,
    use_fake_provider: Any,
    quick_keepalive: None,
    media_root: Any,
    celery_worker: Any,
    asgi_server: Any,
) -> None:
    uploaded_version(alice.organization, SLOW_AGENT, slug="slow")
    text = '#call=slowLookup {"ms": 1500}'
    result = drive(
        "keepalive",
        module="ai",
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id="team/slow",
        texts=[text],
        path=SLOW_CHAT,
    )
    order = result["order"]
    called, answered = order.index("tool-input-available"), order.index("tool-output-available")
    assert "comment" in order[called:answered], order
    # The tool's log line is the run's, not the end user's: the agent did not opt in.
    assert "data-log" not in order
    assert order[-2:] == ["finish", "data-status"] or order[-1] == "data-status"
    assert result["sdk"]["error"] is None and result["sdk"]["status"] == "ready"
    assert result["sdk"]["messages"][-1]["partTypes"].count("tool-slowLookup") == 1
    assert "data-usage" not in result["sdk"]["messages"][-1]["partTypes"]


TOOLS_AGENT = PROJECT_ROOT / "tests" / "fixtures" / "aisdk" / "tools-agent.mjs"
TOOLS_CHAT = "/api/v1/chat/tools/tools"


@pytest.mark.parametrize("module", AI_MODULES)
def test_a_client_side_tool_round_trip(
    module: str, alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization, TOOLS_AGENT, slug="tools")
    chat_id = f"team/{module}/client-tool"
    result = drive(
        "clientTool",
        module=module,
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=['where am I? #call=getLocation {"precise": true}'],
        path=TOOLS_CHAT,
    )
    final = result["final"]
    assert final["status"] == "ready" and final["error"] is None
    # onToolCall saw the model's call; the page's result went back with the AI SDK's automatic send.
    assert result["calls"] == [{"toolName": "getLocation", "input": {"precise": True}}]
    first, second = result["posted"]
    assert first["lastRole"] == "user"
    assert second["trigger"] == "submit-message" and second["lastRole"] == "assistant"
    # One answer, continued in place: the second stream's `start` named the same message.
    [question, answer] = final["messages"]
    assert second["lastId"] == answer["id"]
    assert answer["partTypes"] == ["step-start", "text", "tool-getLocation", "step-start", "text"]
    [tool] = answer["tools"]
    assert tool["state"] == "output-available" and tool["output"] == {"city": "Lyon", "precise": True}
    assert answer["text"] == 'Calling a tool.Tool result: {"city":"Lyon","precise":true}'
    # The model saw the call and the browser's result; the run that waited says so.
    sent = use_fake_provider.requests[-1]["messages"]
    assert sent[-1] == {
        "role": "tool",
        "tool_call_id": tool["toolCallId"],
        "content": '{"city":"Lyon","precise":true}',
    }
    runs = list(Run.objects.filter(session__public_id=chat_id).order_by("created_at"))
    assert [run.status for run in runs] == [RunStatus.SUCCEEDED, RunStatus.SUCCEEDED]
    assert runs[0].output["pendingToolCalls"][0]["kind"] == "client" and runs[0].tool_calls == 0
    assert answer["metadata"] == {"runId": str(runs[1].pk)}
    assert stored(alice.organization, chat_id) == [
        ("user", question["text"]),
        ("assistant", answer["text"]),
    ]


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
def test_an_approval_round_trip(
    approve: bool, alice: Any, use_fake_provider: Any, media_root: Any, celery_worker: Any, asgi_server: Any
) -> None:
    uploaded_version(alice.organization, TOOLS_AGENT, slug="tools")
    chat_id = f"team/approval-{approve}"
    result = drive(
        "approval",
        module="ai6",  # tool approvals are AI SDK 6's
        asgi_server=asgi_server,
        key=alice.keys["all"],
        chat_id=chat_id,
        texts=['clean up #call=deleteFile {"path": "/tmp/report.txt"}'],
        path=TOOLS_CHAT,
        extra_env={"APPROVE": "1" if approve else "0"},
    )
    [requested] = result["requested"]["messages"][-1]["tools"]
    assert requested["state"] == "approval-requested" and requested["approval"]["id"].startswith("apr_")
    final = result["final"]
    assert final["status"] == "ready" and final["error"] is None
    [question, answer] = final["messages"]
    assert result["posted"][1]["lastId"] == answer["id"]
    [tool] = answer["tools"]
    first, continued = Run.objects.filter(session__public_id=chat_id).order_by("created_at")
    assert first.tool_calls == 0  # asked, never run before the answer
    if approve:
        # Ran in the sandbox once approved.
        assert tool["state"] == "output-available"
        assert tool["output"] == {"deleted": "/tmp/report.txt", "ranIn": "sandbox", "session": chat_id}
        assert continued.tool_calls == 1
        assert answer["text"].endswith(
            'Tool result: {"deleted":"/tmp/report.txt","ranIn":"sandbox",' + (f'"session":"{chat_id}"}}')
        )
    else:
        # Never ran; the model was told.
        assert tool["state"] == "output-denied" and tool["output"] is None
        assert continued.tool_calls == 0
        assert answer["text"].endswith("Tool result: Tool execution denied. Reason: not that file")
    assert tool["approval"]["id"] == requested["approval"]["id"] and tool["approval"]["approved"] is approve
    assert stored(alice.organization, chat_id) == [("user", question["text"]), ("assistant", answer["text"])]
