"""A real browser: a page on another origin streams a chat from the live server with a client token.

The page runs the AI SDK's own chat client (`ai`'s AbstractChat + DefaultChatTransport, what `useChat`
runs), bundled for the browser by esbuild at test setup (tests/fixtures/aisdk/browser-chat.mjs, cached
under LIGHTFAST_DATA_DIR by content hash). A second local HTTP server serves it, so the page's origin
(`http://localhost:<its port>`) is not the platform's: the request is cross-origin and only CORS lets
the page read the stream. The page mints nothing; the test mints the token with the API key.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from execution.models import ChatSession
from tests.browser import chromium, screenshot_dir  # noqa: F401 - the `chromium` fixture
from tests.execution.conftest import uploaded_version
from tests.execution.live_transport import asgi_server_fixture  # noqa: F401 - the `asgi_server` fixture
from tests.realworld.corpus import data_dir
from tests.services import PROJECT_ROOT

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.browser,
    pytest.mark.skipif(shutil.which("node") is None, reason="esbuild builds the page's script with Node"),
]

AISDK = PROJECT_ROOT / "tests" / "fixtures" / "aisdk"
ENTRY = AISDK / "browser-chat.mjs"
ESBUILD = PROJECT_ROOT / "node_modules" / ".bin" / "esbuild"
CHAT_PATH = "/api/v1/chat/weather/weather"
PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>Lightfast chat</title><script src="/chat.js"></script></head>
<body><h1>Chat</h1><div id="messages"></div></body></html>
"""


def browser_chat_script() -> Path:
    """esbuild's browser build of the page's script, rebuilt only when its sources or the lockfile change."""
    sources = [ENTRY, AISDK / "chat-state.mjs", PROJECT_ROOT / "package-lock.json"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]
    target = data_dir() / "browser-chat" / f"chat-{digest}.js"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial.js")
        subprocess.run(
            [str(ESBUILD), str(ENTRY), "--bundle", "--minify", "--format=iife", "--platform=browser"]
            + ["--target=es2022", f"--outfile={partial}", "--log-level=warning"],
            cwd=PROJECT_ROOT,
            check=True,
            timeout=120,
        )
        partial.replace(target)
    return target


@contextmanager
def page_server(script: Path) -> Iterator[int]:
    """The page's own web server (a port of its own: another origin than the platform); yields the port."""
    body = script.read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
            content, kind = (body, "text/javascript") if self.path == "/chat.js" else (PAGE, "text/html")
            self.send_response(200)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the hook's signature
            pass  # quiet test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def run_chat(page: Any, *, api: str, token: str, chat_id: str, text: str) -> dict[str, Any]:
    """Have the page send one message and wait for the answer; what its chat then shows."""
    args = {"api": api, "token": token, "chatId": chat_id, "text": text}
    result: dict[str, Any] = page.evaluate("(args) => window.lightfastTest.runChat(args)", args)
    return result


def test_a_page_on_another_origin_streams_a_chat_with_a_client_token(
    chromium: Any,  # noqa: F811 - the fixture imported above
    alice: Any,
    api: Any,
    use_fake_provider: Any,
    media_root: Any,
    celery_worker: Any,
    asgi_server: Any,
) -> None:
    uploaded_version(alice.organization)
    script = browser_chat_script()
    with page_server(script) as port:
        allowed, other = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
        key = alice.keys["all"]
        assert api.post("/api/v1/allowed-origins", {"origin": allowed}, key=key).status_code == 201
        minted = api.post(
            "/api/v1/client-tokens", {"bundle": "weather", "agent": "weather", "ttl_seconds": 300}, key=key
        )
        assert minted.status_code == 201
        token = minted.json()["token"]
        chat_api = f"{asgi_server.http}{CHAT_PATH}"
        context = chromium.new_context()
        try:
            page = context.new_page()
            # What the page's network saw of the chat endpoint (Chromium answers preflights itself and
            # reports only the request they let through, or that request's failure).
            exchanges: list[tuple[str, dict[str, str]]] = []
            failures: list[tuple[str, str | None]] = []

            def seen(response: Any) -> None:
                if CHAT_PATH in response.url:
                    exchanges.append((response.request.method, response.headers))

            def failed(request: Any) -> None:
                if CHAT_PATH in request.url:
                    failures.append((request.method, request.failure))

            page.on("response", seen)
            page.on("requestfailed", failed)
            page.goto(f"{allowed}/")
            result = run_chat(
                page, api=chat_api, token=token, chat_id="page/chat-1", text="hello from the page"
            )
            page.screenshot(path=str(screenshot_dir() / "browser-chat-allowed.png"))

            assert result["status"] == "ready" and result["error"] is None, result
            assert [(m["role"], m["text"]) for m in result["messages"]] == [
                ("user", "hello from the page"),
                ("assistant", "Echo: hello from the page"),
            ]
            assert "Echo: hello from the page" in page.inner_text("#messages")
            # CORS let the page read the stream: answered for this page's origin only (never `*`, never
            # with credentials), after the preflight the Authorization header needs.
            [(method, headers)] = exchanges
            assert method == "POST" and failures == []
            assert headers["access-control-allow-origin"] == allowed
            assert "access-control-allow-credentials" not in headers
            assert headers["content-type"].startswith("text/event-stream")
            assert ChatSession.objects.get(organization=alice.organization, public_id="page/chat-1")

            # The same page served from an origin the organization does not allow: the browser refuses.
            exchanges.clear()
            page.goto(f"{other}/")
            refused = run_chat(page, api=chat_api, token=token, chat_id="page/chat-2", text="hello again")
            page.screenshot(path=str(screenshot_dir() / "browser-chat-refused.png"))
        finally:
            context.close()
    assert refused["status"] == "error" and refused["error"] == "Failed to fetch", refused
    assert [(m["role"], m["text"]) for m in refused["messages"]] == [("user", "hello again")]
    # Refused at the preflight: the POST never left the browser, and nothing ran for it.
    assert exchanges == [] and failures == [("POST", "net::ERR_FAILED")]
    assert not ChatSession.objects.filter(public_id="page/chat-2").exists()
