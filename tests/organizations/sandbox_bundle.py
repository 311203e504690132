"""Helpers to run an organization's tool in the real sandbox: a ready fixture bundle, an echo server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from organizations.models import Organization
from tests.bundles import tool_invoke, uploaded_version
from tests.egress_servers import serve

BUNDLE = Path(__file__).resolve().parents[1] / "fixtures" / "organizations" / "env_fetch.mjs"


def ready_bundle(organization: Organization, slug: str = "probe") -> None:
    """Upload the env/fetch fixture bundle and introspect it in the sandbox right away (no Celery)."""
    uploaded_version(organization, BUNDLE, slug=slug)


def invoke(api: Any, key: str, tool: str, input: dict[str, Any], slug: str = "probe") -> dict[str, Any]:  # noqa: A002
    """Call the fixture bundle's tool through the REST tool-invoke endpoint; returns the JSON answer."""
    return tool_invoke(api, key, slug, tool, input)


class EchoHandler(BaseHTTPRequestHandler):
    """Answers with the headers it received (names and values) and echoes `Authorization` back."""

    received: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        headers = {name.lower(): value for name, value in self.headers.items()}
        type(self).received.append(headers)
        body = json.dumps({"header_names": sorted(headers)}).encode()
        self.send_response(200)
        # Echoing the secret back: the host must scrub it before the answer reaches JS.
        self.send_header("X-Echo-Authorization", headers.get("authorization", ""))
        self.send_header("X-Plain", "visible")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def echo_server() -> Iterator[int]:
    """An HTTPS server (test CA) on the host's loopback; reachable only with the test-only switches."""
    EchoHandler.received = []
    with serve(EchoHandler, tls=True) as port:
        yield port
