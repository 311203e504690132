"""Streaming chat completions from any OpenAI-compatible server (OpenAI, AI Gateway, OpenRouter, vLLM…)."""

from __future__ import annotations

import json
import logging
import random
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx2
import openai

from execution.providers.base import (
    PROVIDER_AUTH,
    PROVIDER_BAD_REQUEST,
    PROVIDER_BAD_RESPONSE,
    PROVIDER_NETWORK,
    PROVIDER_RATE_LIMITED,
    PROVIDER_TIMEOUT,
    PROVIDER_UNAVAILABLE,
    CancelToken,
    ModelRequest,
    ProviderError,
    ProviderEvent,
    StepEnd,
    TextDelta,
    ToolCall,
    secret_scrub,
)

logger = logging.getLogger(__name__)

_FINISH_REASONS = {
    "stop": "stop",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "length": "length",
    "content_filter": "content-filter",
}


class OpenAICompatibleProvider:
    """One configured endpoint: base URL, key, timeouts and retry policy."""

    name = "openai-compatible"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_connections: int = 2000,
    ) -> None:
        self.base_url = base_url
        self._secrets = (api_key,) if api_key else ()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # `read` bounds the gap between chunks, not the whole answer.
        timeout = httpx2.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key or "unset",
            max_retries=0,
            timeout=timeout,
            http_client=openai.DefaultHttpxClient(
                timeout=timeout,
                limits=httpx2.Limits(max_connections=max_connections, max_keepalive_connections=200),
            ),
        )

    def stream(self, request: ModelRequest, *, cancel: CancelToken) -> Iterator[ProviderEvent]:
        """Yield the step's text deltas and tool calls, then StepEnd; raises ProviderError."""
        attempt = 0
        while True:
            try:
                stream = self._open(request)
                break
            except ProviderError as exc:
                retryable = exc.code in (PROVIDER_RATE_LIMITED, PROVIDER_UNAVAILABLE, PROVIDER_NETWORK)
                if not retryable or attempt >= self.max_retries or cancel.cancelled:
                    self._log(exc)
                    raise
                delay = self._retry_delay(attempt, exc)
                attempt += 1
                logger.info(
                    "provider %s answered %s, retry %d in %.2f s", self._url(), exc.code, attempt, delay
                )
                if cancel.event.wait(delay):
                    return
        try:
            yield from self._read(stream, cancel)
        except ProviderError as exc:
            self._log(exc)
            raise

    def _url(self) -> str:
        return secret_scrub(self.base_url, self._secrets)

    def _log(self, exc: ProviderError) -> None:
        """Log the provider's own words for operators, scrubbed of the key; users get `exc.message` only."""
        exc.detail = secret_scrub(exc.detail, self._secrets)
        exc.message = secret_scrub(exc.message, self._secrets)  # a provider error code, however unlikely
        logger.warning("provider %s: %s (%s) %s", self._url(), exc.code, exc.status, exc.detail)

    def _retry_delay(self, attempt: int, exc: ProviderError) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, float):
            return min(retry_after, 30.0)
        return self.backoff_s * (2**attempt) * (0.8 + 0.4 * random.random())  # noqa: S311 - jitter

    def _open(self, request: ModelRequest) -> Any:
        kwargs: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    },
                }
                for tool in request.tools
            ]
        try:
            return self._client.chat.completions.create(**kwargs)
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except openai.APITimeoutError as exc:
            raise ProviderError(
                PROVIDER_TIMEOUT, "The model provider did not answer within the timeout.", detail=str(exc)
            ) from exc
        except openai.APIConnectionError as exc:
            raise ProviderError(
                PROVIDER_NETWORK, "Could not reach the model provider.", detail=_chain(exc)
            ) from exc

    def _read(self, stream: Any, cancel: CancelToken) -> Iterator[ProviderEvent]:
        unregister = cancel.on_cancel(lambda: _abort_response(stream.response))
        calls: dict[int, dict[str, str]] = {}
        finish_reason = "stop"
        input_tokens = output_tokens = 0
        try:
            for chunk in stream:
                if cancel.cancelled:
                    return
                usage = getattr(chunk, "usage", None)
                if usage is not None:
                    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
                    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None and delta.content:
                        yield TextDelta(delta.content)
                    for tool_delta in (delta.tool_calls if delta is not None else None) or []:
                        slot = calls.setdefault(tool_delta.index, {"id": "", "name": "", "arguments": ""})
                        if tool_delta.id:
                            slot["id"] = tool_delta.id
                        function = tool_delta.function
                        if function is not None:
                            slot["name"] += function.name or ""
                            slot["arguments"] += function.arguments or ""
                    if choice.finish_reason:
                        finish_reason = _FINISH_REASONS.get(choice.finish_reason, "other")
        except openai.APITimeoutError as exc:
            raise ProviderError(
                PROVIDER_TIMEOUT, "The model provider stopped sending within the timeout.", detail=str(exc)
            ) from exc
        except (openai.APIConnectionError, httpx2.TransportError) as exc:
            if cancel.cancelled:
                return
            raise ProviderError(PROVIDER_NETWORK, "The model stream broke off.", detail=_chain(exc)) from exc
        except openai.APIError as exc:
            raise ProviderError(
                PROVIDER_BAD_RESPONSE, "The model provider sent an error in the stream.", detail=str(exc)
            ) from exc
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            # JSON that does not parse, or chunks without the expected shape.
            if cancel.cancelled:
                return
            raise ProviderError(
                PROVIDER_BAD_RESPONSE, "The model provider sent a malformed stream.", detail=repr(exc)
            ) from exc
        finally:
            unregister()
            stream.response.close()
        if cancel.cancelled:
            return
        for index in sorted(calls):
            slot = calls[index]
            if not slot["name"]:
                raise ProviderError(PROVIDER_BAD_RESPONSE, "The model sent a tool call without a name.")
            yield ToolCall(id=slot["id"] or f"call_{index}", name=slot["name"], arguments=slot["arguments"])
        if calls and finish_reason == "stop":
            finish_reason = "tool-calls"
        yield StepEnd(finish_reason=finish_reason, input_tokens=input_tokens, output_tokens=output_tokens)


# A provider's machine-readable error code (`context_length_exceeded`, `model_not_found`) is
# passed on for 4xx other than 401/403; free text never is.
_SAFE_CODE = re.compile(r"[a-z][a-z0-9_.-]{2,63}")


def _status_error(exc: openai.APIStatusError) -> ProviderError:
    status = exc.status_code
    detail = _error_detail(exc)
    if status in (401, 403):
        return ProviderError(
            PROVIDER_AUTH,
            f"The model provider refused the configured credentials (HTTP {status}).",
            status=status,
            detail=detail,
        )
    if status == 429:
        error = ProviderError(
            PROVIDER_RATE_LIMITED,
            "The model provider is rate limiting (HTTP 429).",
            status=status,
            detail=detail,
        )
    elif status >= 500:
        error = ProviderError(
            PROVIDER_UNAVAILABLE, f"The model provider failed (HTTP {status}).", status=status, detail=detail
        )
    else:
        code = _error_code(exc)
        return ProviderError(
            PROVIDER_BAD_REQUEST,
            f"The model provider rejected the request (HTTP {status}{', ' + code if code else ''}).",
            status=status,
            detail=detail,
        )
    retry_after = exc.response.headers.get("retry-after")
    try:
        error.retry_after = float(retry_after) if retry_after else None  # type: ignore[attr-defined]
    except ValueError:
        error.retry_after = None  # type: ignore[attr-defined]
    return error


def _error_code(exc: openai.APIStatusError) -> str:
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else None
    code = inner.get("code") if isinstance(inner, dict) else None
    return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else ""


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    try:
        return json.dumps(body)[:2000] if body is not None else str(exc.message)[:2000]
    except (TypeError, ValueError):
        return str(exc.message)[:2000]


def _chain(exc: BaseException) -> str:
    """The exception and its causes, for the log."""
    parts = [repr(exc)]
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(parts) < 4:
        parts.append(repr(cause))
        cause = cause.__cause__ or cause.__context__
    return " <- ".join(parts)


def _abort_response(response: httpx2.Response) -> None:
    """Unblock a read in another thread: shutdown() wakes a blocked recv(), close() alone does not."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError as exc:
            logger.debug("socket already closed while aborting a model stream: %s", exc)
        return
    # No raw socket to shut down (e.g. a custom transport): close from a helper thread so a
    # close that blocks on the reader's lock cannot stall the canceller.
    threading.Thread(target=_close_quietly, args=(response,), daemon=True).start()


def _close_quietly(response: Any) -> None:
    """Close an aborted stream's response; one that fails to close was dead already."""
    try:
        response.close()
    except (OSError, httpx2.HTTPError) as exc:
        logger.debug("closing an aborted model stream failed: %s", exc)
