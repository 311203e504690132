"""Egress policy: deny by default, no internal addresses in any spelling, redirects, caps, secrets."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from execution.sandbox.egress import EgressPolicy, address_denied, egress_fetch
from execution.sandbox.limits import Limits
from tests.egress_servers import ca_file_for_tests, serve

SECRET = "sk-test-very-secret-value"


class _Handler(BaseHTTPRequestHandler):
    seen: list[dict[str, str]] = []

    def log_message(self, *args: Any) -> None:
        return

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        if self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.end_headers()
            return
        if self.path == "/big":
            body = b"z" * 4096
        else:
            body = json.dumps({"path": self.path, "host": self.headers.get("Host")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Api-Key", self.headers.get("X-Api-Key", "none"))  # echoes the secret back
        self.send_header("X-Leak", f"token={self.headers.get('X-Api-Key', '')}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def tls_server() -> Iterator[int]:
    """The same server over HTTPS, with a certificate from the test CA (secrets go over https only)."""
    _Handler.seen = []
    with serve(_Handler, tls=True) as port:
        yield port


@pytest.fixture
def server() -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that records request headers."""
    _Handler.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _get(url: str, policy: EgressPolicy, **request: Any) -> dict[str, Any]:
    return egress_fetch(
        {"url": url, "method": "GET", "headers": [], "body_b64": None, **request},
        policy=policy,
        timeout_s=5,
        limits=Limits(fetch_response_bytes=1024),
    )


def _test_policy(**extra: Any) -> EgressPolicy:
    # Loopback is reachable only through this explicitly test-named flag.
    return EgressPolicy(
        allow_hosts=["localhost", "127.0.0.1"],
        unsafe_allow_loopback_for_tests=True,
        unsafe_ca_file_for_tests=ca_file_for_tests(),
        **extra,
    )


def test_empty_policy_denies_everything(server: int) -> None:
    result = _get(f"http://127.0.0.1:{server}/", EgressPolicy())
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert _Handler.seen == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "169.254.169.254",
        "[fd00:ec2::254]",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "0.0.0.0",
        "[::]",
        "224.0.0.1",
        "[fe80::1%25eth0]",
        "[64:ff9b::a9fe:a9fe]",
    ],
)
def test_internal_addresses_denied_in_every_spelling_even_when_allow_listed(host: str, server: int) -> None:
    bare = host.strip("[]").replace("%25", "%")
    policy = EgressPolicy(allow_hosts=[bare, host, "localhost"])
    result = _get(f"http://{host}:{server}/", policy)
    assert result["ok"] is False
    assert result["error"]["type"] == "egress_denied", result
    assert _Handler.seen == []


def test_address_classification() -> None:
    assert address_denied("8.8.8.8") is None
    assert address_denied("2606:4700:4700::1111") is None
    assert address_denied("::ffff:10.1.2.3") == "private address"
    assert address_denied("127.0.0.1", allow_loopback=True) is None
    assert address_denied("10.0.0.1", allow_loopback=True) == "private address"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://localhost/",
        "gopher://localhost/",
        "http://user:pw@localhost/",
        "http:///nohost",
    ],
)
def test_only_plain_http_and_https_urls(url: str) -> None:
    result = _get(url, _test_policy())
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"


def test_allowed_host_works_with_test_loopback_flag(server: int) -> None:
    result = _get(f"http://localhost:{server}/hello?x=1", _test_policy())
    assert result["ok"] is True, result
    assert result["status"] == 200
    body = json.loads(base64.b64decode(result["body_b64"]))
    assert body == {"path": "/hello?x=1", "host": f"localhost:{server}"}


def test_host_not_on_allow_list_is_denied(server: int) -> None:
    policy = EgressPolicy(allow_hosts=["example.com"], unsafe_allow_loopback_for_tests=True)
    assert _get(f"http://localhost:{server}/", policy)["error"]["type"] == "egress_denied"


def test_wildcard_matches_subdomains_only() -> None:
    policy = EgressPolicy(allow_hosts=["*.example.com"])
    assert policy.host_allowed("api.example.com")
    assert policy.host_allowed("a.b.example.com")
    assert not policy.host_allowed("example.com")
    assert not policy.host_allowed("evilexample.com")
    assert not policy.host_allowed("example.com.evil.org")


def test_redirect_to_private_address_is_denied(server: int) -> None:
    result = _get(
        f"http://localhost:{server}/redirect?to=http://169.254.169.254/latest/meta-data/", _test_policy()
    )
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert "169.254.169.254" in result["error"]["message"]


def test_redirect_to_host_off_the_allow_list_is_denied(server: int) -> None:
    result = _get(f"http://localhost:{server}/redirect?to=http://example.org/", _test_policy())
    assert result["error"]["type"] == "egress_denied"


def test_redirect_within_policy_is_followed(server: int) -> None:
    result = _get(f"http://localhost:{server}/redirect?to=/final", _test_policy())
    assert result["ok"] is True
    assert json.loads(base64.b64decode(result["body_b64"]))["path"] == "/final"
    # The result says a redirect was followed (the runtime's Response.redirected) and where it ended.
    assert result["redirected"] is True and result["url"] == f"http://localhost:{server}/final"
    direct = _get(f"http://localhost:{server}/final", _test_policy())
    assert direct["ok"] is True and direct["redirected"] is False


def test_response_size_cap(server: int) -> None:
    result = _get(f"http://localhost:{server}/big", _test_policy())
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert "exceeds" in result["error"]["message"]


def test_request_size_cap(server: int) -> None:
    body = base64.b64encode(b"x" * 2048).decode()
    result = egress_fetch(
        {"url": f"http://localhost:{server}/", "method": "POST", "headers": [], "body_b64": body},
        policy=_test_policy(),
        timeout_s=5,
        limits=Limits(fetch_request_bytes=1024),
    )
    assert result["ok"] is False and "request body exceeds" in result["error"]["message"]


def test_secret_headers_added_for_matching_host_and_never_returned(tls_server: int) -> None:
    policy = _test_policy(secret_headers={f"localhost:{tls_server}": {"X-Api-Key": SECRET}})
    result = _get(
        f"https://localhost:{tls_server}/", policy, headers=[["X-Api-Key", "js-guess"], ["Accept", "x/y"]]
    )
    assert result["ok"] is True, result
    assert _Handler.seen[-1]["x-api-key"] == SECRET  # the host added it, overriding JS's value
    assert _Handler.seen[-1]["accept"] == "x/y"
    assert SECRET not in json.dumps(result)  # stripped from response headers, by name and by value
    assert not any(name.lower() in {"x-api-key", "x-leak"} for name, _ in result["headers"])


def test_secret_headers_not_sent_to_other_hosts(tls_server: int) -> None:
    policy = _test_policy(secret_headers={f"api.example.com:{tls_server}": {"X-Api-Key": SECRET}})
    result = _get(f"https://localhost:{tls_server}/", policy)
    assert result["ok"] is True
    assert "x-api-key" not in _Handler.seen[-1]


def test_secret_headers_never_sent_over_plain_http(server: int) -> None:
    policy = _test_policy(secret_headers={f"localhost:{server}": {"X-Api-Key": SECRET}})
    result = _get(f"http://localhost:{server}/", policy)
    assert result["ok"] is True
    assert SECRET not in json.dumps(_Handler.seen)


def test_unreachable_host_is_a_tool_error_not_a_hang() -> None:
    policy = _test_policy()
    result = egress_fetch(
        {"url": "http://127.0.0.1:1/", "method": "GET", "headers": []}, policy=policy, timeout_s=2
    )
    assert result["ok"] is False and result["error"]["type"] in {"tool_error", "timeout"}
