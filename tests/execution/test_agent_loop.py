"""The agent loop through the run services, in process: demo model, OpenAI-compatible provider, errors."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest

from execution.models import Message, Run, RunStatus
from execution.selectors import run_events_after
from execution.services import run_cancel, run_execute, run_start
from tests.bundles import manifest_version, uploaded_version, weather_manifest
from tests.execution.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db(transaction=True)


def start_and_execute(organization: Any, text: str, **kwargs: Any) -> Run:
    """Start a chat run on the weather agent and drive it here (no Celery)."""
    version = kwargs.pop("version", None) or manifest_version(organization)
    run = run_start(
        organization=organization, bundle_version=version, agent_key="weather", text=text, **kwargs
    )
    assert run_execute(run_id=run.pk, worker="test") is True
    run.refresh_from_db()
    return run


def types(run: Run) -> list[str]:
    return [event.type for event in run_events_after(run, 0)]


def text_of(run: Run) -> str:
    return "".join(event.payload["delta"] for event in run_events_after(run, 0) if event.type == "text-delta")


def test_demo_model_says_what_it_is_and_streams_in_order(alice: Any) -> None:
    run = start_and_execute(alice.organization, "Hello there")
    assert run.status == RunStatus.SUCCEEDED
    assert run.model == "demo"
    events = run_events_after(run, 0)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert types(run)[:4] == ["start", "data-status", "start-step", "text-start"]
    assert types(run)[-5:] == ["text-end", "finish-step", "data-usage", "finish", "data-status"]
    assert events[-1].payload["data"]["status"] == "succeeded"
    assert events[-2].payload == {"finishReason": "stop"}
    assert events[-3].payload["transient"] is True  # data-usage never becomes a message part
    assert events[0].payload["messageMetadata"] == {"runId": str(run.pk)}
    assert "demo model" in text_of(run) and "Hello there" in text_of(run)
    assert types(run).count("text-delta") > 1
    assistant = Message.objects.get(run=run, role="assistant")
    assert assistant.text() == text_of(run)
    assert assistant.public_id == events[0].payload["messageId"]
    assert run.output == {"text": text_of(run)}
    assert run.input_tokens > 0 and run.output_tokens > 0 and run.steps == 1


def test_demo_model_is_deterministic(alice: Any) -> None:
    first = start_and_execute(alice.organization, "same words")
    second = start_and_execute(alice.organization, "same words")
    assert text_of(first) == text_of(second)


def test_openai_compatible_provider_gets_system_prompt_history_and_tools(
    alice: Any, use_fake_provider: FakeOpenAI
) -> None:
    first = start_and_execute(alice.organization, "first question")
    assert first.status == RunStatus.SUCCEEDED, first.error_message
    assert text_of(first) == "Echo: first question"
    assert first.model == "openai/gpt-4o-mini"
    assert first.input_tokens > 0 and first.output_tokens == 7
    second = start_and_execute(alice.organization, "second question", session=first.session)
    request = use_fake_provider.requests[-1]
    assert request["_authorization"] == "Bearer sk-test-platform-key"
    assert request["model"] == "openai/gpt-4o-mini"
    assert [m["role"] for m in request["messages"]] == ["system", "user", "assistant", "user"]
    assert request["messages"][0]["content"].startswith("You are a concise weather assistant.")
    assert request["messages"][2]["content"] == "Echo: first question"
    assert [tool["function"]["name"] for tool in request["tools"]] == ["getWeather"]
    assert "$schema" not in request["tools"][0]["function"]["parameters"]
    assert text_of(second) == "Echo: second question"


def test_model_map_renames_models(alice: Any, use_fake_provider: FakeOpenAI, settings: Any) -> None:
    settings.LIGHTFAST_MODEL_MAP = {"openai/gpt-4o-mini": "local-llama"}
    run = start_and_execute(alice.organization, "hi")
    assert use_fake_provider.requests[-1]["model"] == "local-llama"
    assert run.model == "local-llama"
    settings.LIGHTFAST_MODEL_MAP = {"*": "demo"}
    assert start_and_execute(alice.organization, "hi").model == "demo"


@pytest.mark.parametrize(
    ("marker", "error_type", "attempts"),
    [
        ("#status=401", "provider_auth", 1),
        ("#status=429", "provider_rate_limited", 3),
        ("#status=500", "provider_unavailable", 3),
        ("#malformed", "provider_bad_response", 1),
    ],
)
def test_provider_errors_fail_the_run_clearly(
    alice: Any, use_fake_provider: FakeOpenAI, marker: str, error_type: str, attempts: int
) -> None:
    before = len(use_fake_provider.requests)
    run = start_and_execute(alice.organization, f"please fail {marker}")
    assert run.status == RunStatus.FAILED
    assert run.error_type == error_type
    assert run.error_message
    assert len(use_fake_provider.requests) - before == attempts
    events = run_events_after(run, 0)
    error = next(event for event in events if event.type == "error")
    assert error.payload["errorText"].startswith(error_type)
    assert events[-1].type == "data-status"
    assert events[-1].payload["data"] == {
        "status": "failed",
        "error": {"type": error_type, "message": run.error_message},
    }


@pytest.mark.parametrize("status", [429, 500])
def test_provider_429_and_5xx_are_retried_then_succeed(
    alice: Any, use_fake_provider: FakeOpenAI, status: int
) -> None:
    run = start_and_execute(alice.organization, f"flaky #fail={status}:2")
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert text_of(run).startswith("Echo: flaky")


def test_provider_timeout(alice: Any, use_fake_provider: FakeOpenAI, settings: Any) -> None:
    settings.LIGHTFAST_MODEL_TIMEOUT_S = 0.5
    run = start_and_execute(alice.organization, "slow #slow=3")
    assert run.status == RunStatus.FAILED
    assert run.error_type == "provider_timeout"


def test_tool_arguments_that_are_not_json_become_a_tool_error_the_model_sees(
    alice: Any, use_fake_provider: FakeOpenAI
) -> None:
    run = start_and_execute(alice.organization, "#call=getWeather {city: Paris")
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    events = run_events_after(run, 0)
    tool_input = next(event for event in events if event.type == "tool-input-available")
    assert tool_input.payload["toolName"] == "getWeather"
    assert tool_input.payload["input"] == "{city: Paris"
    error = next(event for event in events if event.type == "tool-output-error")
    assert error.payload["toolCallId"] == tool_input.payload["toolCallId"]
    assert error.payload["errorText"].startswith("invalid_input")
    # The model saw the error as the tool's result and answered in a second step.
    assert run.steps == 2
    assert "invalid_input" in text_of(run)
    assert use_fake_provider.requests[-1]["messages"][-1]["role"] == "tool"


def test_unknown_tool_becomes_a_tool_error(alice: Any, use_fake_provider: FakeOpenAI) -> None:
    run = start_and_execute(alice.organization, '#call=launchMissiles {"target": "moon"}')
    assert run.status == RunStatus.SUCCEEDED
    error = next(event for event in run_events_after(run, 0) if event.type == "tool-output-error")
    assert error.payload["errorText"].startswith("unknown_tool")
    assert run.tool_calls == 0


def test_several_tool_calls_of_one_step_are_announced_then_run_together_in_call_order(
    alice: Any, use_fake_provider: FakeOpenAI, media_root: Any
) -> None:
    version = uploaded_version(alice.organization)
    text = '#call=getWeather {"city": "Paris"}\n#call=nope {}\n#call=getWeather {"city": "Oslo"}'
    run = start_and_execute(alice.organization, text, version=version)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    events = run_events_after(run, 0)
    kinds = [event.type for event in events]
    inputs = [event for event in events if event.type == "tool-input-available"]
    assert [event.payload["toolName"] for event in inputs] == ["getWeather", "nope", "getWeather"]
    # Every call is announced before any of them answers; the answers follow in call order.
    first_output = kinds.index("tool-output-available")
    assert max(events.index(event) for event in inputs) < first_output
    answers = [event for event in events if event.type in ("tool-output-available", "tool-output-error")]
    assert [event.payload["toolCallId"] for event in answers] == [
        inputs[1].payload["toolCallId"],  # the unknown tool's error comes with its announcement
        inputs[0].payload["toolCallId"],
        inputs[2].payload["toolCallId"],
    ]
    assert answers[0].payload["errorText"].startswith("unknown_tool")
    assert [answer.payload["output"]["city"] for answer in answers[1:]] == ["Paris", "Oslo"]
    assert run.tool_calls == 2 and run.steps == 2
    # The model got the three results in the order it asked for them.
    tool_messages = [m for m in use_fake_provider.requests[-1]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == [event.payload["toolCallId"] for event in inputs]
    assert '"city":"Paris"' in tool_messages[0]["content"] and '"city":"Oslo"' in tool_messages[2]["content"]


def test_platform_step_cap_ends_the_loop(alice: Any, use_fake_provider: FakeOpenAI, settings: Any) -> None:
    settings.LIGHTFAST_RUN_MAX_STEPS = 1
    run = start_and_execute(alice.organization, "#call=launchMissiles {}")
    assert run.status == RunStatus.SUCCEEDED
    assert run.steps == 1
    assert types(run).count("start-step") == 1


def test_stop_when_step_count_lowers_the_cap(alice: Any, use_fake_provider: FakeOpenAI) -> None:
    manifest = weather_manifest()
    manifest["agents"]["weather"]["options"] = {"stopWhen": {"stepCount": 1}}
    version = manifest_version(alice.organization, slug="capped", manifest=manifest)
    run = start_and_execute(alice.organization, "#call=launchMissiles {}", version=version)
    assert run.steps == 1


@pytest.mark.parametrize(
    ("stop_when", "steps"),
    [
        (None, 2),  # the tool step, then the model's answer
        ({"hasToolCall": "launchMissiles"}, 1),
        ({"hasToolCall": "getWeather"}, 2),
        ([{"stepCount": 5}, {"hasToolCall": "launchMissiles"}], 1),
        ([{"hasToolCall": "getWeather"}, {"stepCount": 1}], 1),
    ],
)
def test_stop_when_has_tool_call_and_lists_end_the_loop(
    alice: Any, use_fake_provider: FakeOpenAI, stop_when: Any, steps: int
) -> None:
    """Descriptors the runtime recognised from (inlined) stepCountIs/hasToolCall are honoured."""
    manifest = weather_manifest()
    if stop_when is not None:
        manifest["agents"]["weather"]["options"] = {"stopWhen": stop_when}
    version = manifest_version(alice.organization, slug="stops", manifest=manifest)
    run = start_and_execute(alice.organization, "#call=launchMissiles {}", version=version)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert run.steps == steps
    assert types(run).count("tool-output-error") == 1  # launchMissiles is no tool of the agent


def test_provider_models_map_under_their_family(
    alice: Any, use_fake_provider: FakeOpenAI, settings: Any
) -> None:
    """A model from an inlined provider (openai.responses + id) resolves to the platform provider."""
    model = {"provider": "openai.responses", "id": "gpt-4o-mini", "baseURL": "https://api.openai.com/v1"}
    version = manifest_version(alice.organization, slug="inlined", manifest=weather_manifest(model))
    run = start_and_execute(alice.organization, "hi", version=version)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert use_fake_provider.requests[-1]["model"] == "gpt-4o-mini"  # unmapped: its id, unchanged
    settings.LIGHTFAST_MODEL_MAP = {"openai/gpt-4o-mini": "mapped-by-family", "gpt-4o-mini": "mapped-by-id"}
    assert start_and_execute(alice.organization, "hi", version=version).model == "mapped-by-family"
    settings.LIGHTFAST_MODEL_MAP = {"gpt-4o-mini": "mapped-by-id"}
    assert start_and_execute(alice.organization, "hi", version=version).model == "mapped-by-id"
    gateway = manifest_version(alice.organization, slug="gw", manifest=weather_manifest())
    settings.LIGHTFAST_MODEL_MAP = {"openai/openai/gpt-4o-mini": "never", "openai/gpt-4o-mini": "gw"}
    assert start_and_execute(alice.organization, "hi", version=gateway).model == "gw"


def test_history_replays_tool_calls_and_results(alice: Any, use_fake_provider: FakeOpenAI) -> None:
    first = start_and_execute(alice.organization, "#call=nope {}")
    start_and_execute(alice.organization, "and now?", session=first.session)
    messages = use_fake_provider.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert messages[2]["tool_calls"][0]["function"] == {"name": "nope", "arguments": "{}"}
    assert json.loads(messages[3]["content"])["error"].startswith("unknown_tool")


def test_cancel_stops_a_hanging_model_stream_within_a_second(
    alice: Any, use_fake_provider: FakeOpenAI
) -> None:
    version = manifest_version(alice.organization)
    run = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="#hang"
    )
    worker = threading.Thread(target=run_execute, kwargs={"run_id": run.pk})
    worker.start()
    deadline = time.monotonic() + 10
    while not any(e.type == "text-delta" for e in run_events_after(run, 0)) and time.monotonic() < deadline:
        time.sleep(0.02)
    cancelled_at = time.monotonic()
    run_cancel(run=run)
    worker.join(5)
    elapsed = time.monotonic() - cancelled_at
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert run.error_type == "cancelled"
    assert elapsed < 1.0, elapsed
    # The open text and step are closed, then `abort` ends the message.
    assert types(run)[-5:] == ["text-end", "finish-step", "data-usage", "abort", "data-status"]
    # What streamed before the cancel is kept in the session.
    assert Message.objects.get(run=run, role="assistant").text() == "Thinking"


def test_wall_limit_ends_the_run_timed_out(alice: Any, use_fake_provider: FakeOpenAI) -> None:
    alice.organization.run_wall_ms = 700
    alice.organization.save()
    run = start_and_execute(alice.organization, "#hang")
    assert run.status == RunStatus.TIMED_OUT
    assert run.error_type == "timeout"
    assert run.wall_ms < 2000


def test_cancel_before_a_worker_claims_it(alice: Any) -> None:
    version = manifest_version(alice.organization)
    run = run_start(organization=alice.organization, bundle_version=version, agent_key="weather", text="hi")
    run = run_cancel(run=run)
    assert run.status == RunStatus.CANCELLED
    # A worker that receives the task afterwards finds nothing to do.
    assert run_execute(run_id=run.pk) is False
    assert types(run) == ["data-status"]


def test_a_live_run_is_heartbeated_and_never_reaped(
    alice: Any, use_fake_provider: FakeOpenAI, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from execution.services import run_reap_lost

    settings.LIGHTFAST_RUN_HEARTBEAT_S = 0.2
    # The hanging model call must outlast the wait for a heartbeat, the reaper and the cancel.
    settings.LIGHTFAST_MODEL_TIMEOUT_S = 30.0
    version = manifest_version(alice.organization)
    run = run_start(
        organization=alice.organization, bundle_version=version, agent_key="weather", text="#hang"
    )
    worker = threading.Thread(target=run_execute, kwargs={"run_id": run.pk})
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.started_at and run.heartbeat_at and run.heartbeat_at > run.started_at:
                break
            time.sleep(0.05)
        assert run.heartbeat_at > run.started_at
        # Stale only relative to a clock far enough ahead of the last heartbeat.
        almost_stale = run.heartbeat_at + timedelta(seconds=settings.LIGHTFAST_RUN_STALE_S - 1)
        assert run_reap_lost(now=almost_stale) == {"retried": 0, "failed": 0}
        assert timezone.now() < almost_stale
    finally:
        run_cancel(run=run)
        worker.join(5)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED


def test_a_provider_401_that_echoes_the_key_reaches_nobody(
    alice: Any, use_fake_provider: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """The fake server answers 401 as OpenAI does, naming the key masked (`sk-...-key`) and in full."""
    key = "sk-test-platform-key"
    with caplog.at_level("WARNING", logger="execution.providers.openai_compatible"):
        run = start_and_execute(alice.organization, "hello #status=401")
    assert run.error_type == "provider_auth"
    assert run.error_message == "The model provider refused the configured credentials (HTTP 401)."
    stored = json.dumps([event.payload for event in run_events_after(run, 0)]) + run.error_message
    stored += json.dumps([message.parts for message in Message.objects.filter(run=run)])
    for leak in (key, "sk-...-key", "Incorrect API key", "-key"):
        assert leak not in stored
    # Operators still see what the provider said, without the key.
    logged = caplog.text
    assert "Incorrect API key provided" in logged and "[redacted]" in logged
    assert key not in logged and "sk-...-key" not in logged


def test_provider_4xx_is_a_bad_request_naming_only_the_providers_code(
    alice: Any, use_fake_provider: FakeOpenAI
) -> None:
    run = start_and_execute(alice.organization, "hello #status=404")
    assert run.error_type == "provider_bad_request"
    assert run.error_message == "The model provider rejected the request (HTTP 404)."
    assert "fake provider says" not in run.error_message


def test_an_unreachable_provider_is_a_network_error(
    alice: Any, use_fake_provider: FakeOpenAI, settings: Any
) -> None:
    settings.LIGHTFAST_MODEL_BASE_URL = "http://127.0.0.1:9/v1"
    run = start_and_execute(alice.organization, "hello")
    assert run.error_type == "provider_network"
    assert run.error_message == "Could not reach the model provider."


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("bad key sk-test-platform-key here", ["sk-test-platform-key"], "bad key [redacted] here"),
        (
            "Incorrect API key provided: sk-...-key.",
            ["sk-test-platform-key"],
            "Incorrect API key provided: [redacted]",
        ),
        ("key sk-te************-key used", ["sk-test-platform-key"], "key [redacted] used"),
        ("token abcd…wxyz", ["abcdefghijklwxyz"], "token [redacted]"),
        ("some sk-proj-AbC123xyz elsewhere", [], "some [redacted] elsewhere"),
        ("nothing secret here...", ["sk-test-platform-key"], "nothing secret here..."),
    ],
)
def test_secret_scrub(text: str, secrets: list[str], expected: str) -> None:
    from execution.providers.base import secret_scrub

    assert secret_scrub(text, secrets) == expected
