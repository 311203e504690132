"""Helpers to run an organization's tool in the real sandbox: a ready fixture bundle, an echo server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from agents.models import VersionStatus
from agents.services import bundle_upload, bundle_version_introspect
from organizations.models import Organization
from organizations.services import Actor
from tests.egress_servers import serve

BUNDLE = Path(__file__).resolve().parents[1] / "fixtures" / "organizations" / "env_fetch.mjs"


def ready_bundle(organization: Organization, slug: str = "probe") -> None:
    """Upload the env/fetch fixture bundle and introspect it in the sandbox right away (no Celery)."""
    version = bundle_upload(
        organization=organization, slug=slug, data=BUNDLE.read_bytes(), actor=Actor.system("tests")
    ).version
    version = bundle_version_introspect(version_id=version.pk, organization_id=organization.pk)
    assert version is not None and version.status == VersionStatus.READY, version and version.error_message


def invoke(api: Any, key: str, tool: str, input: dict[str, Any], slug: str = "probe") -> dict[str, Any]:
    """Call the tool through the REST tool-invoke endpoint; returns the JSON answer."""
    response = api.post(f"/api/v1/bundles/{slug}/tools/{tool}/invoke", json={"input": input}, key=key)
    assert response.status_code == 200, response.content
    return dict(response.json())


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


@pytest.fixture
def media_root(settings: Any, tmp_path: Path) -> Path:
    """A media directory of this test's own for uploaded bundles."""
    root = tmp_path / "media"
    root.mkdir()
    settings.MEDIA_ROOT = str(root)
    return root
