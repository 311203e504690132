"""What every model provider speaks: chat messages in, a stream of text deltas, tool calls and usage out."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

# Error types of provider failures (in addition to the sandbox taxonomy); stable strings shown to users.
PROVIDER_AUTH = "provider_auth"  # 401/403: the platform's key for the provider was refused
PROVIDER_RATE_LIMITED = "provider_rate_limited"  # 429 after retries
PROVIDER_UNAVAILABLE = "provider_unavailable"  # 5xx after retries
PROVIDER_NETWORK = "provider_network"  # connection refused/reset after retries, stream cut off
PROVIDER_TIMEOUT = "provider_timeout"  # no answer or no chunk within the provider timeout
PROVIDER_BAD_REQUEST = "provider_bad_request"  # other 4xx: the provider refused the request
PROVIDER_BAD_RESPONSE = "provider_bad_response"  # malformed stream, an error inside the stream
PROVIDER_ERROR_TYPES = frozenset(
    {
        PROVIDER_AUTH,
        PROVIDER_RATE_LIMITED,
        PROVIDER_UNAVAILABLE,
        PROVIDER_NETWORK,
        PROVIDER_TIMEOUT,
        PROVIDER_BAD_REQUEST,
        PROVIDER_BAD_RESPONSE,
    }
)


class ProviderError(Exception):
    """A classified failure of the model provider; ends the run `failed` with `code` as its error type.

    `message` is written by the platform and is what end users see (stream, run error, events);
    it never holds text the provider sent, which may echo credentials (an OpenAI 401 names the
    refused key). `detail` is the provider's own text with the configured key scrubbed, for the
    server log only.
    """

    def __init__(self, code: str, message: str, *, status: int | None = None, detail: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail


REDACTED = "[redacted]"
# Tokens that look like API keys whatever key is configured: sk-…, sk-proj-…, sk-ant-…, masked or not.
_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.…]{4,}", re.IGNORECASE)
_MASK = re.compile(r"[*…]|\.\.\.")


def secret_scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` without the secrets: in full, masked (`sk-...abcd`, `sk-ab****abcd`), and key-like tokens.

    A masked form is any whitespace-delimited token holding a mask (`*`, `...`, `…`) that also holds
    the secret's first or last four characters.
    """
    for secret in secrets:
        if len(secret) < 8:
            continue
        text = text.replace(secret, REDACTED)
        head, tail = secret[:4], secret[-4:]

        def masked(match: re.Match[str], head: str = head, tail: str = tail) -> str:
            token = match.group(0)
            return REDACTED if _MASK.search(token) and (head in token or tail in token) else token

        text = re.sub(r"\S+", masked, text)
    return _KEY_LIKE.sub(REDACTED, text)


class CancelToken:
    """Why and when a run must stop; wraps the threading.Event the sandbox takes.

    Blocking operations register an abort callback (e.g. shut down the model stream's
    socket) so that a cancel from another thread interrupts them at once.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self.event.is_set()

    def cancel(self, reason: str) -> None:
        """Stop the run for `reason` (`cancelled`, `timeout`, `worker_lost`); the first reason wins."""
        with self._lock:
            if self.event.is_set():
                return
            self.reason = reason
            self.event.set()
            callbacks = list(self._callbacks)
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run `callback` on cancel (at once if already cancelled); returns a function that unregisters it."""
        with self._lock:
            if not self.event.is_set():
                self._callbacks.append(callback)
                return lambda: self._discard(callback)
        callback()
        return lambda: None

    def _discard(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, description and JSON Schema of the input."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class TextDelta:
    """A piece of the assistant's text."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """The model asks for a tool; `arguments` is the raw JSON text the model produced (may be invalid)."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class StepEnd:
    """The model finished one step (`stop`, `tool-calls`, `length`, …) with its token counts."""

    finish_reason: str
    input_tokens: int = 0
    output_tokens: int = 0


ProviderEvent = TextDelta | ToolCall | StepEnd


@dataclass
class ModelRequest:
    """One step's request: OpenAI-style chat messages, the tools and the provider's model id."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[ToolSpec] = field(default_factory=list)


class ModelProvider(Protocol):
    """Streams one step of a model answer; raises ProviderError; stops promptly when `cancel` fires."""

    name: str

    def stream(self, request: ModelRequest, *, cancel: CancelToken) -> Iterator[ProviderEvent]:
        """Yield TextDelta and ToolCall events, then exactly one StepEnd."""
        ...
