"""The built-in offline `demo` model: deterministic, says what it is, calls a named tool with JSON input."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from execution.providers.base import (
    CancelToken,
    ModelRequest,
    ProviderEvent,
    StepEnd,
    TextDelta,
    ToolCall,
)

DEMO_MODEL_ID = "demo"
WORDS_PER_DELTA = 4
_decoder = json.JSONDecoder()


def _words(text: str) -> int:
    return len(text.split())


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _find_tool_call(text: str, tool_names: list[str]) -> tuple[str, str | None] | None:
    """The first tool named in `text` and its raw argument text (None when no arguments follow)."""
    best: tuple[int, str] | None = None
    for name in sorted(tool_names, key=len, reverse=True):
        match = re.search(rf"(?<![A-Za-z0-9_$]){re.escape(name)}(?![A-Za-z0-9_$])", text)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), name)
    if best is None:
        return None
    start, name = best
    rest = text[start + len(name) :].lstrip()
    if not rest.startswith("{"):
        return name, None
    try:
        value, _ = _decoder.raw_decode(rest)
    except ValueError:
        # The "model" got the arguments wrong: pass them on so the tool reports the mistake.
        return name, rest.splitlines()[0]
    return name, json.dumps(value, separators=(",", ":"))


class DemoProvider:
    """Answers offline and deterministically; see the module docstring for the rules."""

    name = "demo"

    def stream(self, request: ModelRequest, *, cancel: CancelToken) -> Iterator[ProviderEvent]:
        """Yield the demo answer for the last message as text deltas, maybe one tool call, then StepEnd."""
        input_tokens = sum(_words(_message_text(message)) for message in request.messages)
        tool_names = [tool.name for tool in request.tools]
        last = request.messages[-1] if request.messages else {"role": "user", "content": ""}
        call: ToolCall | None = None
        if last.get("role") == "tool":
            text = self._answer_tool_results(request.messages)
        else:
            user_text = _message_text(last)
            found = _find_tool_call(user_text, tool_names)
            if found is not None and found[1] is not None:
                name, arguments = found
                previous_calls = sum(len(m.get("tool_calls") or []) for m in request.messages)
                call = ToolCall(id=f"call_demo_{previous_calls + 1}", name=name, arguments=arguments or "{}")
                text = f"Demo model (offline): calling {name}."
            elif found is not None:
                text = (
                    f"Demo model (offline, not a real LLM): to call {found[0]}, name it followed by its "
                    f'JSON arguments, e.g. {found[0]} {{"city": "Paris"}}.'
                )
            else:
                tools = ", ".join(tool_names) or "none"
                text = (
                    "This is the Lightfast demo model (offline, deterministic, not a real LLM). "
                    f'You said: "{user_text.strip()[:200]}". Tools: {tools}. Name a tool followed by '
                    'JSON arguments, e.g. getWeather {"city": "Paris"}, to call it.'
                )
        words = text.split(" ")
        for index in range(0, len(words), WORDS_PER_DELTA):
            if cancel.cancelled:
                return
            chunk = " ".join(words[index : index + WORDS_PER_DELTA])
            yield TextDelta(chunk if index == 0 else " " + chunk)
        if call is not None:
            yield call
        yield StepEnd(
            finish_reason="tool-calls" if call is not None else "stop",
            input_tokens=input_tokens,
            output_tokens=_words(text) + (_words(call.arguments) if call else 0),
        )

    @staticmethod
    def _answer_tool_results(messages: list[dict[str, Any]]) -> str:
        names: dict[str, str] = {}
        for message in messages:
            for tool_call in message.get("tool_calls") or []:
                names[tool_call["id"]] = tool_call["function"]["name"]
        results: list[str] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            name = names.get(message.get("tool_call_id", ""), "the tool")
            results.append(f"{name} returned {_message_text(message)}.")
        return "Demo model (offline): " + " ".join(reversed(results))
