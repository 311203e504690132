"""A local OpenAI-compatible chat-completions server for tests and benchmarks (the one allowed stand-in).

Streams `POST /v1/chat/completions` answers as server-sent events, like the real API. What it
answers is scripted by markers in the newest user message:

* `#status=401|429|500` — answer that status with an OpenAI error body (a 401 echoes the
  key as OpenAI does: masked in the message, and in full in the body's `param`);
* `#fail=429:N` / `#fail=500:N` — fail the first N requests of this conversation, then answer;
* `#slow=S` — wait S seconds before the first chunk;
* `#drip=S` — wait S seconds between text chunks (a slow answer that streams for a while);
* `#hang` — send one text chunk, then nothing (until the client goes away); `#hang=N`: only for
  the first N requests of this conversation, then answer;
* `#malformed` — send a chunk that is not JSON;
* `#call=NAME ARGS` — call tool NAME with ARGS (the rest of that line, valid JSON or not);
  several such lines are several tool calls of one step;
* otherwise — after tool results, `Tool result: <content>`; else `Echo: <text>`.

Runs on its own asyncio loop in a daemon thread, so it holds thousands of slow streams at once.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import defaultdict
from typing import Any


class FakeOpenAI:
    """Start with `FakeOpenAI().start()`; `base_url` is what the provider settings need."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._attempts: dict[str, int] = defaultdict(int)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self.open_streams = 0
        self.peak_open_streams = 0

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (`…/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeOpenAI:
        """Listen on a free port in a background thread."""
        threading.Thread(target=self._run, name="fake-openai", daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=4096)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if ":" in line
            )
            headers = {key.strip().lower(): value.strip() for key, value in headers.items()}
            body = json.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
            body["_authorization"] = headers.get("authorization", "")
            self.requests.append(body)
            self.open_streams += 1
            self.peak_open_streams = max(self.peak_open_streams, self.open_streams)
            try:
                await self._answer(body, writer)
            finally:
                self.open_streams -= 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, body: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        messages = body.get("messages") or []
        users = [m for m in messages if m.get("role") == "user"]
        user_text = str(users[-1].get("content") or "") if users else ""
        last = messages[-1] if messages else {}
        conversation = json.dumps(users[:1]) + str(len(messages))
        self._attempts[conversation] += 1

        status = re.search(r"#status=(\d{3})", user_text)
        fail = re.search(r"#fail=(\d{3}):(\d+)", user_text)
        key = str(body.get("_authorization", "")).removeprefix("Bearer ")
        if status:
            return await self._error(writer, int(status.group(1)), key)
        if fail and self._attempts[conversation] <= int(fail.group(2)):
            return await self._error(writer, int(fail.group(1)), key)

        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
        slow = re.search(r"#slow=([0-9.]+)", user_text)
        if slow:
            await asyncio.sleep(float(slow.group(1)))
        if "#malformed" in user_text and last.get("role") == "user":
            writer.write(b"data: {this is not json\n\n")
            await writer.drain()
            return
        hang = re.search(r"#hang(?:=(\d+))?", user_text)
        if hang and (hang.group(1) is None or self._attempts[conversation] <= int(hang.group(1))):
            await self._chunk(writer, {"content": "Thinking"})
            await asyncio.sleep(3600)
            return
        calls = re.findall(r"#call=(\w+) ?([^\n]*)", user_text)
        if calls and last.get("role") == "user":
            await self._chunk(writer, {"content": "Calling a tool."})
            for index, (name, arguments) in enumerate(calls):
                await self._chunk(
                    writer,
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "id": f"call_{int(time.time() * 1000)}_{index}",
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    },
                )
                # Arguments arrive in pieces, as real providers send them.
                for start in range(0, len(arguments), 7):
                    piece = {"index": index, "function": {"arguments": arguments[start : start + 7]}}
                    await self._chunk(writer, {"tool_calls": [piece]})
            await self._finish(writer, "tool_calls", messages)
            return
        text = f"Tool result: {last.get('content')}" if last.get("role") == "tool" else f"Echo: {user_text}"
        drip = re.search(r"#drip=([0-9.]+)", user_text)
        for start in range(0, len(text), 16):
            if drip and start:
                await asyncio.sleep(float(drip.group(1)))
            await self._chunk(writer, {"content": text[start : start + 16]})
        await self._finish(writer, "stop", messages)

    @staticmethod
    async def _chunk(
        writer: asyncio.StreamWriter,
        delta: dict[str, Any],
        finish: str | None = None,
        usage: dict[str, int] | None = None,
    ) -> None:
        chunk: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
        }
        if usage is not None:
            chunk["usage"] = usage
        writer.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await writer.drain()

    async def _finish(
        self, writer: asyncio.StreamWriter, reason: str, messages: list[dict[str, Any]]
    ) -> None:
        await self._chunk(writer, {}, finish=reason)
        prompt = sum(len(str(m.get("content") or "").split()) for m in messages)
        await self._chunk(
            writer, {}, usage={"prompt_tokens": prompt, "completion_tokens": 7, "total_tokens": prompt + 7}
        )
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()

    @staticmethod
    async def _error(writer: asyncio.StreamWriter, status: int, key: str = "") -> None:
        message = f"fake provider says {status}"
        if status == 401:
            # As OpenAI does: the refused key, masked, in the message; the full key elsewhere in the body.
            message = f"Incorrect API key provided: {key[:3]}...{key[-4:]}. You can find your key at ..."
        body = json.dumps(
            {"error": {"message": message, "type": "fake", "code": status, "param": key or None}}
        )
        reason = {401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error"}.get(
            status, "Error"
        )
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\nretry-after: 0\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n{body}".encode()
        )
        await writer.drain()
