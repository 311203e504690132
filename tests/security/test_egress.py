"""Egress cannot be starved and secrets cannot leak.

Real local servers on 127.0.0.1 (a drip server, an echo server reflecting headers and body,
a redirecting server on another origin), reached through the host's egress code with the
test-only loopback switch; HTTPS ones carry a certificate from the session's test CA,
because the host injects secrets over https only.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.urls import reverse

from agents.selectors import sandbox_settings_for
from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy, FetchScheduler, address_denied, egress_fetch
from execution.sandbox.limits import Limits
from execution.sandbox.transform import transform
from organizations.errors import SettingInvalid
from organizations.models import OrganizationVariable
from organizations.services import Actor, variable_set
from tests.egress_servers import ca_file_for_tests, serve
from tests.organizations.test_variables import _change_form_data

SECRET = "sk-live-0123456789abcdefXYZ"
AUTH = f"Bearer {SECRET}"
FETCHER = Path(__file__).resolve().parents[1] / "fixtures" / "sandbox" / "fetcher.mjs"
# Drip servers stop at this point at the latest; a fetch that lasted this long was not cut off.
DRIP_SECONDS = 30.0


# --- servers ----------------------------------------------------------------------------------


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        return


class DripHandler(_Quiet):
    """Sends one byte every 50 ms: in the status line, in a sized body, or in a chunked body."""

    stop = threading.Event()

    def _drip(self, data: bytes) -> None:
        until = time.monotonic() + DRIP_SECONDS
        for byte in data:
            if self.stop.is_set() or time.monotonic() > until:
                return
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.05)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/headers":
            self._drip(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 10_000 + b"\r\n\r\n")
            return
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._drip(b"".join(b"1\r\nz\r\n" for _ in range(10_000)))
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self._drip(b"z" * 100_000)


class EchoHandler(_Quiet):
    """Reflects what it received, in several encodings, in the body, the headers and the reason."""

    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        headers = {name.lower(): value for name, value in self.headers.items()}
        type(self).seen.append(headers)
        auth = headers.get("authorization", "")
        raw = auth.encode()
        path = urlsplit(self.path).path
        if path == "/redirect-with-secret":
            target = parse_qs(urlsplit(self.path).query)["to"][0] + quote(auth)
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        forms = {
            "headers": headers,
            "raw": auth,
            "token_only": auth.removeprefix("Bearer "),
            "base64": base64.b64encode(raw).decode(),
            "base64_shifted": base64.b64encode(b"x" + raw).decode(),
            "base64_urlsafe": base64.urlsafe_b64encode(b"xy" + raw).decode(),
            "hex": raw.hex(),
            "HEX": raw.hex().upper(),
            "percent": quote(auth, safe=""),
        }
        body = json.dumps(forms).encode()
        if path == "/split":
            self._send_split(raw)
            return
        encoding = None
        if path == "/gzip":
            body, encoding = gzip.compress(body), "gzip"
        elif path == "/br":
            encoding = "br"
        self.send_response(200, f"OK {auth}")
        self.send_header("X-Echo-Authorization", auth)
        self.send_header("X-Echo-B64", base64.b64encode(raw).decode())
        self.send_header("X-Plain", "visible")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_split(self, raw: bytes) -> None:
        # The secret straddles two chunks, sent apart: the host must scrub the whole body.
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        half = len(raw) // 2
        for part in (b"before:" + raw[:half], raw[half:] + b":after"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            time.sleep(0.1)
        self.wfile.write(b"0\r\n\r\n")


class HopHandler(_Quiet):
    """Redirects to `?to=` (`/to`) or records what reached it; one class for every origin."""

    seen: list[tuple[str, dict[str, str]]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        type(self).seen.append((parts.path, {name.lower(): value for name, value in self.headers.items()}))
        if parts.path == "/to":
            self.send_response(302)
            self.send_header("Location", parse_qs(parts.query)["to"][0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def drip() -> Iterator[tuple[int, int]]:
    """(http port, https port) of drip servers; stopped (connections closed) at teardown."""
    DripHandler.stop = threading.Event()
    with serve(DripHandler) as http_port, serve(DripHandler, tls=True) as https_port:
        yield http_port, https_port
        DripHandler.stop.set()


@pytest.fixture
def echo() -> Iterator[int]:
    """HTTPS echo server port."""
    EchoHandler.seen = []
    with serve(EchoHandler, tls=True) as port:
        yield port


@pytest.fixture
def hops() -> Iterator[tuple[int, int, int]]:
    """(https port A, https port B, http port C) of recording/redirecting servers."""
    HopHandler.seen = []
    with serve(HopHandler, tls=True) as a, serve(HopHandler, tls=True) as b, serve(HopHandler) as c:
        yield a, b, c


def _policy(**extra: Any) -> EgressPolicy:
    return EgressPolicy(
        allow_hosts=["localhost", "127.0.0.1"],
        unsafe_allow_loopback_for_tests=True,
        unsafe_ca_file_for_tests=ca_file_for_tests(),
        **extra,
    )


def _fetch(url: str, policy: EgressPolicy, timeout_s: float = 10, **request: Any) -> dict[str, Any]:
    return egress_fetch(
        {"url": url, "method": "GET", "headers": [], "body_b64": None, **request},
        policy=policy,
        timeout_s=timeout_s,
        limits=Limits(),
    )


# --- the whole-transfer deadline ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tls"), [("/headers", False), ("/body", False), ("/chunked", False), ("/body", True)]
)
def test_a_dripping_server_cannot_stretch_a_fetch_past_its_deadline(
    drip: tuple[int, int], path: str, tls: bool
) -> None:
    port = drip[1] if tls else drip[0]
    scheme = "https" if tls else "http"
    started = time.monotonic()
    result = _fetch(f"{scheme}://localhost:{port}{path}", _policy(), timeout_s=1.0)
    elapsed = time.monotonic() - started
    assert result["ok"] is False and result["error"]["type"] == "timeout", result
    # Not a speed figure: the server would have dripped for DRIP_SECONDS; the fetch stopped at its 1 s.
    assert elapsed < DRIP_SECONDS / 4, elapsed


def test_a_dripping_server_through_the_sandbox_ends_as_a_classified_fetch_timeout(
    drip: tuple[int, int],
) -> None:
    started = time.monotonic()
    result = api.invoke(
        transform(FETCHER.read_bytes()),
        agent="probe",
        tool="fetchUrl",
        input={"url": f"http://localhost:{drip[0]}/body"},
        context={"sessionId": "s", "resourceId": "org_drip"},
        env={},
        egress=_policy(organization="org_drip"),
        limits=Limits(fetch_timeout_ms=1000, wall_ms=20_000),
        bundle_key="org_drip:fetcher",
    )
    assert result.ok, result.error
    assert "timed out" in result.output["rejected"]
    assert time.monotonic() - started < DRIP_SECONDS / 2


# --- per-organization fetch concurrency -----------------------------------------------------------


def test_one_organizations_dripping_fetches_do_not_hold_another_organizations_fetch(
    drip: tuple[int, int], hops: tuple[int, int, int]
) -> None:
    scheduler = FetchScheduler(per_organization=2)
    try:
        attacker = _policy(organization="org_a")
        slow = {"url": f"http://localhost:{drip[0]}/body", "method": "GET", "headers": []}
        dripping = [scheduler.submit(slow, policy=attacker, timeout_s=25, limits=Limits()) for _ in range(2)]
        _wait_for(lambda: scheduler.running("org_a") == 2)

        # Another organization's fetch runs at once, on its own slots.
        victim = _policy(organization="org_b")
        fast = {"url": f"http://localhost:{hops[2]}/ok", "method": "GET", "headers": []}
        answer = scheduler.submit(fast, policy=victim, timeout_s=5, limits=Limits()).result(timeout=10)
        assert answer["ok"] is True and answer["status"] == 200, answer
        assert not any(future.done() for future in dripping)

        # The attacker's third fetch waits for its own slot and fails `timeout` at its deadline.
        queued = scheduler.submit(slow, policy=attacker, timeout_s=0.5, limits=Limits()).result(timeout=10)
        assert queued["ok"] is False and queued["error"]["type"] == "timeout"
        assert "fetch slots" in queued["error"]["message"]
        assert not any(future.done() for future in dripping)
    finally:
        DripHandler.stop.set()
        scheduler.shutdown()


def test_an_organizations_fetch_queue_is_bounded(drip: tuple[int, int]) -> None:
    scheduler = FetchScheduler(per_organization=1, max_queued=1)
    try:
        policy = _policy(organization="org_a")
        slow = {"url": f"http://localhost:{drip[0]}/body", "method": "GET", "headers": []}
        running = scheduler.submit(slow, policy=policy, timeout_s=20, limits=Limits())
        waiting = scheduler.submit(slow, policy=policy, timeout_s=20, limits=Limits())
        refused: Future[dict[str, Any]] = scheduler.submit(slow, policy=policy, timeout_s=20, limits=Limits())
        assert refused.done()
        assert refused.result()["error"]["type"] == "rate_limited"
        assert not running.done() and not waiting.done()
    finally:
        DripHandler.stop.set()
        scheduler.shutdown()


def _wait_for(condition: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.01)


# --- secrets: https only, their port only -------------------------------------------------------


def test_secret_goes_over_https_to_443_unless_its_pattern_names_the_port(
    echo: int, hops: tuple[int, int, int]
) -> None:
    # "localhost" means https://localhost:443 only: not this server's port.
    _fetch(f"https://localhost:{echo}/", _policy(secret_headers={"localhost": {"Authorization": AUTH}}))
    assert "authorization" not in EchoHandler.seen[-1]
    # Naming the port sends it there.
    _fetch(
        f"https://localhost:{echo}/", _policy(secret_headers={f"localhost:{echo}": {"Authorization": AUTH}})
    )
    assert EchoHandler.seen[-1]["authorization"] == AUTH
    # Never over plain http, even to the named port.
    plain = hops[2]
    result = _fetch(
        f"http://localhost:{plain}/", _policy(secret_headers={f"localhost:{plain}": {"Authorization": AUTH}})
    )
    assert result["ok"] is True
    assert "authorization" not in HopHandler.seen[-1][1]


# --- secrets: scrubbed from what reaches JS -----------------------------------------------------


@pytest.mark.parametrize("path", ["/echo", "/split", "/gzip"])
def test_an_echoed_secret_never_reaches_js(echo: int, path: str) -> None:
    policy = _policy(secret_headers={f"localhost:{echo}": {"Authorization": AUTH}}, secret_values=(SECRET,))
    result = _fetch(f"https://localhost:{echo}{path}", policy)
    assert result["ok"] is True, result
    assert EchoHandler.seen[-1]["authorization"] == AUTH  # it was sent, and echoed back
    body = base64.b64decode(result["body_b64"])
    assert b"*" * len(SECRET) in body
    everything = json.dumps({**result, "body": body.decode("latin-1")})
    raw = AUTH.encode()
    for form in (
        SECRET,
        base64.b64encode(raw).decode()[4:-4],
        base64.b64encode(b"x" + raw).decode()[4:-4],
        base64.urlsafe_b64encode(b"xy" + raw).decode()[4:-4],
        base64.b64encode(SECRET.encode()).decode()[4:-4],
        SECRET.encode().hex(),
        SECRET.encode().hex().upper(),
        quote(SECRET, safe=""),
    ):
        assert form not in everything, form
    names = {name.lower() for name, _ in result["headers"]}
    assert "x-echo-authorization" not in names and "x-echo-b64" not in names
    if path == "/echo":
        assert "x-plain" in names and result["statusText"].startswith("OK ")
    if path == "/gzip":
        assert "content-encoding" not in names  # JS gets the decoded (and scrubbed) body


def test_a_body_the_host_cannot_decode_is_not_passed_on(echo: int) -> None:
    policy = _policy(secret_headers={f"localhost:{echo}": {"Authorization": AUTH}}, secret_values=(SECRET,))
    result = _fetch(f"https://localhost:{echo}/br", policy)
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert "content-encoding" in result["error"]["message"]


def test_a_redirect_carrying_the_secret_is_not_followed(echo: int, hops: tuple[int, int, int]) -> None:
    policy = _policy(secret_headers={f"localhost:{echo}": {"Authorization": AUTH}}, secret_values=(SECRET,))
    target = quote(f"https://127.0.0.1:{hops[1]}/x?k=", safe="")
    result = _fetch(f"https://localhost:{echo}/redirect-with-secret?to={target}", policy)
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert SECRET not in json.dumps(result)
    assert HopHandler.seen == []


# --- credentials and redirects --------------------------------------------------------------------


JS_HEADERS = [["Authorization", "Bearer js-own-token"], ["Cookie", "sid=js"], ["X-Custom", "kept"]]


def test_credentials_are_dropped_when_a_redirect_leaves_the_origin(hops: tuple[int, int, int]) -> None:
    a, b, _ = hops
    policy = _policy(secret_headers={f"localhost:{a}": {"X-Api-Key": SECRET}})
    result = _fetch(f"https://localhost:{a}/to?to=https://127.0.0.1:{b}/landing", policy, headers=JS_HEADERS)
    assert result["ok"] is True, result
    first, landing = HopHandler.seen[0][1], HopHandler.seen[-1][1]
    assert first["x-api-key"] == SECRET and first["authorization"] == "Bearer js-own-token"
    assert HopHandler.seen[-1][0] == "/landing"
    assert "authorization" not in landing and "cookie" not in landing and "x-api-key" not in landing
    assert landing["x-custom"] == "kept"


def test_credentials_stay_dropped_when_the_chain_comes_back(hops: tuple[int, int, int]) -> None:
    a, b, _ = hops
    back = quote(f"https://localhost:{a}/back", safe="")
    policy = _policy(secret_headers={f"localhost:{a}": {"X-Api-Key": SECRET}})
    _fetch(f"https://localhost:{a}/to?to=https://127.0.0.1:{b}/to%3Fto%3D{back}", policy, headers=JS_HEADERS)
    path, returned = HopHandler.seen[-1]
    assert path == "/back"
    assert "authorization" not in returned and "x-api-key" not in returned and "cookie" not in returned


def test_a_redirect_to_plain_http_on_the_same_host_drops_credentials(hops: tuple[int, int, int]) -> None:
    a, _, c = hops
    policy = _policy(secret_headers={f"localhost:{a}": {"X-Api-Key": SECRET}})
    _fetch(f"https://localhost:{a}/to?to=http://localhost:{c}/plain", policy, headers=JS_HEADERS)
    path, plain = HopHandler.seen[-1]
    assert path == "/plain" and "authorization" not in plain and "x-api-key" not in plain


def test_a_same_origin_redirect_keeps_credentials(hops: tuple[int, int, int]) -> None:
    a, _, _ = hops
    policy = _policy(secret_headers={f"localhost:{a}": {"X-Api-Key": SECRET}})
    _fetch(f"https://localhost:{a}/to?to=/same", policy, headers=JS_HEADERS)
    path, same = HopHandler.seen[-1]
    assert path == "/same" and same["authorization"] == "Bearer js-own-token" and same["x-api-key"] == SECRET


# --- addresses: only global unicast, in every spelling --------------------------------------------


REFUSED_HOSTS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0x7f.1",
    "0x7f.0x0.0x0.0x1",
    "0177.0.0.1",
    "0",
    "0.0.0.0",
    "localhost",
    "[::1]",
    "[::]",
    "[::127.0.0.1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:0:7f00:1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::808:808]",
    "[64:ff9b:1::1]",
    "[2002:7f00:1::1]",
    "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[fec0::1]",
    "[fe80::1%25eth0]",
    "[fd00:ec2::254]",
    "[fc00::1]",
    "[ff02::1]",
    "[ff0e::1]",
    "[100::1]",
    "[2001:db8::1]",
    "169.254.169.254",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "192.0.0.170",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "127.0.0.1.",
]


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_every_spelling_of_a_non_global_address_is_refused(host: str, hops: tuple[int, int, int]) -> None:
    port = hops[2]
    bare = host.strip("[]").replace("%25", "%")
    # Allow-listed in every form, and no test loopback switch: the address check alone refuses it.
    policy = EgressPolicy(allow_hosts=[host, bare, "localhost", "127.0.0.1", "*.invalid"])
    result = _fetch(f"http://{host}:{port}/", policy)
    assert result["ok"] is False and result["error"]["type"] == "egress_denied", result
    assert HopHandler.seen == []


@pytest.mark.parametrize(
    "address",
    [
        "::127.0.0.1",
        "::ffff:0:7f00:1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a00:1",
        "64:ff9b:1::808:808",
        "fec0::1",
        "2002:c0a8:101::1",
        "2001::1",
        "ff0e::1",
        "ff02::fb",
        "fe80::1%eth0",
        "::1",
        "127.0.0.53",
        "0.0.0.0",
        "192.0.2.1",
    ],
)
def test_dns_answers_are_checked_the_same_way(address: str) -> None:
    # What `address_denied` refuses is refused for literals, every DNS answer and the connected peer.
    assert address_denied(address) is not None


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8", "2002:808:808::1"]
)
def test_global_unicast_addresses_pass(address: str) -> None:
    assert address_denied(address) is None


def test_a_name_resolving_to_loopback_is_refused(hops: tuple[int, int, int]) -> None:
    result = _fetch(f"http://localhost:{hops[2]}/", EgressPolicy(allow_hosts=["localhost"]))
    assert result["ok"] is False and result["error"]["type"] == "egress_denied"
    assert "loopback" in result["error"]["message"]
    assert HopHandler.seen == []


# --- re-pointing a stored secret needs its value ---------------------------------------------------


def _put_secret(
    api: Any, key: str, value: str | None, hosts: list[str], header: str = "Authorization"
) -> Any:
    return api.request(
        "PUT",
        "/api/v1/variables/TOKEN",
        json_body={
            "value": value,
            "is_secret": True,
            "inject_header": header,
            "inject_prefix": "Bearer ",
            "inject_hosts": hosts,
        },
        key=key,
    )


def test_a_write_key_cannot_repoint_a_secret_without_its_value(alice: Any, api: Any) -> None:
    key = alice.keys["all"]
    assert _put_secret(api, key, SECRET, ["api.example.com"]).status_code == 201
    for hosts, header in (
        (["api.example.com", "evil.example.net"], "Authorization"),
        (["evil.example.net"], "X-Other"),
    ):
        refused = _put_secret(api, key, None, hosts, header)
        assert refused.status_code == 400, refused.content
        assert refused.json()["error"]["detail"]["value"] == "required"
    for header in ("Authorization", "X-Other"):
        refused = _put_secret(api, key, None, ["api.example.com"], header)
        assert refused.status_code == (200 if header == "Authorization" else 400)
    policy = sandbox_settings_for(alice.organization).egress
    assert policy.secrets_for("evil.example.net") == {}
    assert policy.secrets_for("api.example.com") == {"Authorization": AUTH}
    # Narrowing needs no value; widening with the value is allowed.
    assert _put_secret(api, key, SECRET, ["api.example.com", "b.example.com:8443"]).status_code == 200
    assert _put_secret(api, key, None, ["b.example.com:8443"]).status_code == 200
    policy = sandbox_settings_for(alice.organization).egress
    assert policy.secrets_for("b.example.com", port=8443) == {"Authorization": AUTH}
    assert policy.secrets_for("b.example.com") == {} and policy.secrets_for("api.example.com") == {}


def test_the_service_refuses_repointing_without_the_value(alice: Any) -> None:
    actor = Actor.system("tests")
    fields = {"is_secret": True, "inject_header": "X-Key", "actor": actor, "organization": alice.organization}
    variable_set(key="K", value=SECRET, inject_hosts=["api.example.com"], **fields)
    with pytest.raises(SettingInvalid):
        variable_set(key="K", value=None, inject_hosts=["*.example.com"], **fields)
    stored = OrganizationVariable.objects.get(organization=alice.organization, key="K")
    assert stored.inject_hosts == ["api.example.com"]


def test_the_admin_cannot_repoint_a_secret_without_its_value(
    admin_user: Any, client: Any, alice: Any, api: Any
) -> None:
    assert _put_secret(api, alice.keys["all"], SECRET, ["api.example.com"]).status_code == 201
    client.force_login(admin_user)
    url = reverse("admin:organizations_organization_change", args=[alice.organization.pk])
    data = _change_form_data(client, url)
    index = next(
        i for i in range(int(data["variables-TOTAL_FORMS"])) if data[f"variables-{i}-key"] == "TOKEN"
    )
    data[f"variables-{index}-hosts"] = "api.example.com, evil.example.net"
    response = client.post(url, data)
    assert response.status_code == 200  # the form comes back with the error; nothing saved
    assert "needs its value again" in response.content.decode()
    assert OrganizationVariable.objects.get(organization=alice.organization, key="TOKEN").inject_hosts == [
        "api.example.com"
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("api.example.com:443", "api.example.com"),
        ("API.example.com:8443", "api.example.com:8443"),
        ("*.example.com:9443", "*.example.com:9443"),
        ("[2606:4700::1111]:8443", "[2606:4700::1111]:8443"),
    ],
)
def test_a_secret_host_may_name_its_port(alice: Any, given: str, stored: str) -> None:
    variable, _ = variable_set(
        organization=alice.organization,
        key="K",
        value=SECRET,
        is_secret=True,
        inject_header="X-Key",
        inject_hosts=[given],
        actor=Actor.system("tests"),
    )
    assert variable.inject_hosts == [stored]


@pytest.mark.parametrize("given", ["api.example.com:0", "api.example.com:70000", "127.0.0.1:8443"])
def test_a_bad_secret_host_port_is_refused(alice: Any, given: str) -> None:
    with pytest.raises(SettingInvalid):
        variable_set(
            organization=alice.organization,
            key="K",
            value=SECRET,
            is_secret=True,
            inject_header="X-Key",
            inject_hosts=[given],
            actor=Actor.system("tests"),
        )
