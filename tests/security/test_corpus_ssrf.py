"""Corpus, SSRF: every spelling of an internal address, userinfo/backslash/unicode tricks, and redirect
chains, fetched from bundle code. Each is refused with a classified egress error and the test's own
server on 127.0.0.1 never sees the request, even when the policy allow-lists the spelling itself.
"""

# ruff: noqa: E501 - the cases are JavaScript sources, kept one statement a line

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from execution.sandbox.egress import EgressPolicy
from execution.sandbox.limits import Limits
from tests.security.corpus import (
    CorpusSandbox,
    RecordingHandler,
    corpus_fixtures,
    recording_server,
)

LIMITS = Limits(cpu_ms=400, wall_ms=2000, memory_mb=48, fetch_timeout_ms=1000)

TOOLS = {
    # Uncaught: a refused fetch rejects with the runtime's classified error, which ends the call.
    "fetchUrl": "async ({ url, method }) => { const r = await fetch(url, { method: method || 'GET' }); return { status: r.status, body: await r.text() }; }",
}

# {port} is the recording server's port: a spelling that slipped through would reach it.
LOOPBACK_SPELLINGS = [
    "http://127.0.0.1:{port}/",
    "http://127.0.0.2:{port}/",
    "http://127.1:{port}/",
    "http://127.0.1:{port}/",
    "http://2130706433:{port}/",
    "http://0177.0.0.1:{port}/",
    "http://0x7f.1:{port}/",
    "http://0x7f000001:{port}/",
    "http://017700000001:{port}/",
    "http://0x7f.0x0.0x0.0x1:{port}/",
    "http://127.000.000.001:{port}/",
    "http://0:{port}/",
    "http://0.0.0.0:{port}/",
    "http://[::1]:{port}/",
    "http://[0:0:0:0:0:0:0:1]:{port}/",
    "http://[::]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",
    "http://[::ffff:7f00:1]:{port}/",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:{port}/",
    "http://[::127.0.0.1]:{port}/",
    "http://[::ffff:0:7f00:1]:{port}/",
    "http://[64:ff9b::7f00:1]:{port}/",
    "http://[64:ff9b:1::7f00:1]:{port}/",
    "http://[2002:7f00:1::]:{port}/",
    "http://localhost:{port}/",
    "http://LOCALHOST.:{port}/",
    "http://localhost.localdomain:{port}/",
    "http://ip6-localhost:{port}/",
    "http://{hostname}:{port}/",
    "http://%31%32%37.0.0.1:{port}/",
    "HTTP://127.0.0.1:{port}/",
    " http://127.0.0.1:{port}/ ",
    "https://127.0.0.1:{port}/",
]

PRIVATE_SPELLINGS = [
    "http://10.0.0.1:{port}/",
    "http://172.16.0.1:{port}/",
    "http://192.168.1.1:{port}/",
    "http://100.64.0.1:{port}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254:{port}/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]:{port}/",
    "http://[fec0::1]:{port}/",
    "http://[fd00::1]:{port}/",
    "http://[::ffff:10.0.0.1]:{port}/",
    "http://[::10.0.0.1]:{port}/",
    "http://[2001:db8::1]:{port}/",
    "http://[100::1]:{port}/",
    "http://198.18.0.1:{port}/",
    "http://192.0.0.170:{port}/",
    "http://224.0.0.1:{port}/",
    "http://[ff02::1]:{port}/",
    "http://240.0.0.1:{port}/",
    "http://255.255.255.255:{port}/",
]

# Tricks that dress a loopback request up as an allow-listed host.
TRICKS = [
    "http://allowed.example@127.0.0.1:{port}/",
    "http://allowed.example:80@127.0.0.1:{port}/",
    "http://127.0.0.1:{port}\\@allowed.example/",
    "http:\\\\127.0.0.1:{port}\\",
    "http:/\\127.0.0.1:{port}/",
    "http://127.0.0.1:{port}#@allowed.example/",
    "http://127.0.0.1:{port}?@allowed.example/",
    "http://allowed.example.127.0.0.1.nip.io:{port}/",
]

# Spellings the runtime's URL parser may refuse itself (a TypeError: tool_error): unicode full
# stops (it refuses international names; a parser mapping them to "." leaves the host to deny the
# loopback address), an encoded "@", encoded control characters and zone ids in the host.
PARSER_REFUSED = [
    "http://127。0。0。1:{port}/",
    "http://127．0．0．1:{port}/",
    "http://127｡0｡0｡1:{port}/",
    "http://allowed.example%40127.0.0.1:{port}/",
    "http://127.0.0.1%2509:{port}/",
    "http://localhost%00.allowed.example:{port}/",
    "http://[::1%25lo]:{port}/",
]


def _spell(template: str, port: int) -> str:
    return template.format(port=port, hostname=socket.gethostname())


def _allow_list_for(url: str) -> list[str]:
    """Every name the spelling could be checked under, so the allow list is never why it is refused."""
    from urllib.parse import urlsplit

    names = ["allowed.example", "localhost", "127.0.0.1", "::1", "0.0.0.0", "169.254.169.254", "10.0.0.1"]
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        host = None
    if host:
        names += [host, host.rstrip(".")]
    return names


# Module-scoped fixtures: `sandbox` (a one-worker pool, or Docker) and `bundle` (every tool of TOOLS).
sandbox, bundle = corpus_fixtures("ssrf", TOOLS)


@pytest.fixture
def server() -> Iterator[tuple[int, type[RecordingHandler]]]:
    """The server a bypass would reach."""
    yield from recording_server()


def _refused(
    sandbox: CorpusSandbox,
    bundle: Any,
    url: str,
    server: tuple[int, type[RecordingHandler]],
    *,
    egress: EgressPolicy,
    errors: set[str] | None = None,
) -> None:
    port, handler = server
    sandbox.attack(
        bundle, "fetchUrl", {"url": url}, errors=errors or {"egress_denied"}, limits=LIMITS, egress=egress
    )
    assert handler.seen == [], f"{url} reached the server: {handler.seen}"


@pytest.mark.parametrize("template", LOOPBACK_SPELLINGS + PRIVATE_SPELLINGS + TRICKS)
def test_internal_address_spellings_are_refused_even_when_allow_listed(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]], template: str
) -> None:
    url = _spell(template, server[0])
    _refused(sandbox, bundle, url, server, egress=EgressPolicy(allow_hosts=_allow_list_for(url)))


@pytest.mark.parametrize("template", PARSER_REFUSED)
def test_spellings_the_url_parser_may_refuse_are_refused(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]], template: str
) -> None:
    url = _spell(template, server[0])
    _refused(
        sandbox,
        bundle,
        url,
        server,
        egress=EgressPolicy(allow_hosts=_allow_list_for(url) + ["*"]),
        errors={"egress_denied", "tool_error"},
    )


def test_wildcard_allow_list_does_not_open_internal_addresses(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]]
) -> None:
    for template in ("http://127.0.0.1:{port}/", "http://localhost:{port}/", "http://[::1]:{port}/"):
        _refused(
            sandbox,
            bundle,
            _spell(template, server[0]),
            server,
            egress=EgressPolicy(allow_hosts=["*", "*.*"]),
        )


# ------------------------------------------------------------------------- redirect chains
# The allow-listed host is the test server, reachable through the test-only loopback flag; every
# chain starts there and must stop (egress_denied) at the first hop that leaves the policy.


def _redirect_policy(*extra_hosts: str, max_redirects: int = 5) -> EgressPolicy:
    return EgressPolicy(
        allow_hosts=["localhost", *extra_hosts],
        unsafe_allow_loopback_for_tests=True,
        max_redirects=max_redirects,
    )


@pytest.mark.parametrize(
    ("target", "extra_hosts"),
    [
        ("http://127.0.0.1:{port}/landed", ()),  # loopback under a name the allow list lacks
        ("http://[::1]:{port}/landed", ()),
        ("http://2130706433:{port}/landed", ()),
        ("http://169.254.169.254/latest/meta-data/", ("169.254.169.254",)),
        ("http://10.0.0.1:{port}/landed", ("10.0.0.1",)),
        ("http://[::ffff:169.254.169.254]/", ("::ffff:169.254.169.254",)),
        ("http://[fd00:ec2::254]/", ("fd00:ec2::254",)),
        ("http://localhost@127.0.0.1:{port}/landed", ()),
        ("http://example.org/", ()),
        ("file:///etc/passwd", ()),
        ("gopher://localhost:{port}/_GET%20/landed", ()),
        ("ftp://localhost:{port}/landed", ()),
    ],
)
def test_redirect_out_of_the_policy_is_refused(
    sandbox: CorpusSandbox,
    bundle: Any,
    server: tuple[int, type[RecordingHandler]],
    target: str,
    extra_hosts: tuple[str, ...],
) -> None:
    port, handler = server
    url = f"http://localhost:{port}/redirect?to={_spell(target, port)}"
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": url},
        errors={"egress_denied"},
        limits=LIMITS,
        egress=_redirect_policy(*extra_hosts),
    )
    assert [hit for hit in handler.seen if "landed" in hit and not hit.startswith("GET /redirect")] == []
    assert len(handler.seen) == 1, handler.seen


def test_redirect_chain_ending_off_policy_is_refused(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]]
) -> None:
    port, handler = server
    final = "http://169.254.169.254/latest/meta-data/"
    url = f"http://localhost:{port}/redirect?to=/redirect?to=/redirect?to={final}"
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": url},
        errors={"egress_denied"},
        limits=LIMITS,
        egress=_redirect_policy("169.254.169.254"),
    )
    assert len(handler.seen) == 3, handler.seen


def test_redirect_loop_is_refused(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]]
) -> None:
    port, handler = server
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": f"http://localhost:{port}/loop"},
        errors={"egress_denied"},
        limits=LIMITS,
        egress=_redirect_policy(max_redirects=5),
    )
    assert 1 <= len(handler.seen) <= 6, handler.seen


def test_more_hops_than_allowed_are_refused_and_the_limit_itself_works(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]]
) -> None:
    port, handler = server
    policy = _redirect_policy(max_redirects=3)
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": f"http://localhost:{port}/hops/4"},
        errors={"egress_denied"},
        limits=LIMITS,
        egress=policy,
    )
    assert len(handler.seen) <= 4, handler.seen
    handler.seen.clear()
    # Control: exactly max_redirects hops are followed, so the refusal above was the hop count.
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": f"http://localhost:{port}/hops/3"},
        limits=LIMITS,
        egress=policy,
        harmless=lambda out: out["status"] == 200 and "/hops/0" in out["body"],
    )
    assert len(handler.seen) == 4, handler.seen


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_every_redirect_status_is_checked(
    sandbox: CorpusSandbox, bundle: Any, server: tuple[int, type[RecordingHandler]], status: int
) -> None:
    port, handler = server
    url = f"http://localhost:{port}/redirect?status={status}&to=http://169.254.169.254/"
    sandbox.attack(
        bundle,
        "fetchUrl",
        {"url": url, "method": "POST"},
        errors={"egress_denied"},
        limits=LIMITS,
        egress=_redirect_policy("169.254.169.254"),
    )
    assert len(handler.seen) == 1, handler.seen
