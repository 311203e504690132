"""Host side of `fetch` from the sandbox: the organization's egress policy, enforced per request.

Deny by default. A request goes out only when its host is allow-listed (exact or
``*.domain``), its scheme is http/https, and every address the name resolves to is a
public unicast address; the connection then goes to that checked address (no second
lookup, so no DNS rebinding), with the original Host header and TLS SNI/verification
for the name. Redirects are followed by hand and each hop is checked the same way.
Secret headers are added here, for matching hosts only, and are stripped from what
goes back into the sandbox.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from execution.sandbox.errors import EGRESS_DENIED, TIMEOUT, TOOL_ERROR
from execution.sandbox.limits import Limits

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Hop-by-hop or framing headers the host computes itself; JS may not set them.
_DROPPED_REQUEST_HEADERS = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
    }
)
# Addresses that are never reachable from the sandbox even though `is_global` might say so.
_ALWAYS_DENIED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::/32",
    )
)


class EgressDenied(Exception):
    """A request (or one of its redirects) is not allowed by the policy."""

    code = EGRESS_DENIED


@dataclass(frozen=True)
class EgressPolicy:
    """What one organization's bundles may reach; the empty policy denies everything."""

    allow_hosts: list[str] = field(default_factory=list)
    secret_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    max_redirects: int = 5
    # Tests only: lets a test reach its own HTTP server on 127.0.0.1/::1. Production
    # policies are built by the platform, which never sets it, and the CLI cannot.
    unsafe_allow_loopback_for_tests: bool = False

    def host_allowed(self, host: str) -> bool:
        """Whether a (normalised) host name matches the allow list."""
        return any(_pattern_matches(pattern, host) for pattern in self.allow_hosts)

    def secrets_for(self, host: str) -> dict[str, str]:
        """Secret headers to add for this host (exact or *.domain patterns)."""
        headers: dict[str, str] = {}
        for pattern, values in self.secret_headers.items():
            if _pattern_matches(pattern, host):
                headers.update(values)
        return headers

    def secret_names_and_values(self) -> tuple[set[str], set[str]]:
        """Every secret header name (lower-case) and value, for scrubbing responses."""
        names = {name.lower() for values in self.secret_headers.values() for name in values}
        secrets = {value for values in self.secret_headers.values() for value in values.values() if value}
        return names, secrets


def _pattern_matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith("." + normalise_host(pattern[2:]))
    return normalise_host(pattern) == host


def normalise_host(host: str) -> str:
    """Lower-case, strip brackets, zone id and trailing dot; IDNA-encode names."""
    host = host.strip().strip("[]").rstrip(".").lower()
    host = host.split("%", 1)[0]
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def address_denied(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why an IP address may not be contacted (None when it is a public unicast address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in ipaddress.ip_network("64:ff9b::/96"):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_denied(str(embedded), allow_loopback=allow_loopback)
    if allow_loopback and ip.is_loopback:
        return None
    if ip.is_loopback:
        return "loopback address"
    if any(ip in net for net in _ALWAYS_DENIED_NETWORKS if net.version == ip.version):
        return "link-local, metadata, multicast or reserved address"
    if ip.is_private:
        return "private address"
    if not ip.is_global or ip.is_multicast:
        return "non-public address"
    return None


def _resolve(host: str, port: int, *, allow_loopback: bool) -> str:
    """Resolve a host and check every address; return the one to connect to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise EgressDenied(f"cannot resolve {host!r}: {exc}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise EgressDenied(f"{host!r} resolves to no address")
    for address in addresses:
        reason = address_denied(address, allow_loopback=allow_loopback)
        if reason:
            # One bad record denies the name: a mixed answer is how rebinding attacks look.
            raise EgressDenied(f"{host!r} resolves to a {reason}")
    return addresses[0]


def _request_headers(raw: Any, *, secrets: dict[str, str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    secret_names = {name.lower() for name in secrets}
    for pair in raw or []:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise EgressDenied("malformed request headers")
        name, value = str(pair[0]), str(pair[1])
        if any(ch in name + value for ch in "\r\n\0"):
            raise EgressDenied("header with a line break")
        if name.lower() in _DROPPED_REQUEST_HEADERS or name.lower() in secret_names:
            continue
        headers[name] = value
    headers.update(secrets)
    return headers


def _response_headers(response: Any, policy: EgressPolicy) -> list[list[str]]:
    names, values = policy.secret_names_and_values()
    out: list[list[str]] = []
    for name, value in response.headers.items():
        if name.lower() in names or any(secret in value for secret in values):
            continue
        out.append([name, value])
    return out


def _denied(message: str, code: str = EGRESS_DENIED) -> dict[str, Any]:
    return {"ok": False, "error": {"type": code, "message": message}}


def egress_fetch(
    request: dict[str, Any], *, policy: EgressPolicy, timeout_s: float, limits: Limits | None = None
) -> dict[str, Any]:
    """Perform one sandbox `fetch` under `policy`; return the fetch-result payload (never raises)."""
    limits = limits or Limits()
    deadline = time.monotonic() + timeout_s
    try:
        return _fetch(request, policy=policy, deadline=deadline, limits=limits)
    except EgressDenied as exc:
        return _denied(str(exc))
    except urllib3.exceptions.TimeoutError:
        return _denied(f"fetch timed out after {timeout_s:.1f} s", TIMEOUT)
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
        return _denied(f"fetch failed: {type(exc).__name__}", TOOL_ERROR)


def _fetch(
    request: dict[str, Any], *, policy: EgressPolicy, deadline: float, limits: Limits
) -> dict[str, Any]:
    url = str(request.get("url", ""))
    method = str(request.get("method") or "GET").upper()
    if method not in ALLOWED_METHODS:
        raise EgressDenied(f"method {method!r} is not allowed")
    body = base64.b64decode(request["body_b64"]) if request.get("body_b64") else None
    if body is not None and len(body) > limits.fetch_request_bytes:
        raise EgressDenied(f"request body exceeds {limits.fetch_request_bytes} bytes")
    for _hop in range(policy.max_redirects + 1):
        response, pool = _send_one(
            url, method, request.get("headers"), body, policy=policy, deadline=deadline
        )
        try:
            location = response.headers.get("location")
            if response.status in REDIRECT_STATUSES and location:
                url = urljoin(url, location)
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = "GET", None
                continue
            data = _read_capped(response, limits.fetch_response_bytes, deadline)
            return {
                "ok": True,
                "status": response.status,
                "statusText": response.reason or "",
                "url": url,
                "headers": _response_headers(response, policy),
                "body_b64": base64.b64encode(data).decode(),
            }
        finally:
            response.release_conn()
            pool.close()
    raise EgressDenied(f"more than {policy.max_redirects} redirects")


def _send_one(
    url: str, method: str, raw_headers: Any, body: bytes | None, *, policy: EgressPolicy, deadline: float
) -> tuple[Any, urllib3.HTTPConnectionPool]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EgressDenied(f"scheme {scheme or '(none)'!r} is not allowed")
    if parts.username is not None or parts.password is not None:
        raise EgressDenied("credentials in the URL are not allowed")
    if not parts.hostname:
        raise EgressDenied("URL has no host")
    host = normalise_host(parts.hostname)
    if not policy.host_allowed(host):
        raise EgressDenied(f"host {host!r} is not in the organization's allow list")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise EgressDenied(f"bad port in {url!r}") from exc
    address = _resolve(host, port, allow_loopback=policy.unsafe_allow_loopback_for_tests)
    headers = _request_headers(raw_headers, secrets=policy.secrets_for(host))
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    headers["Host"] = host if default_port else f"{host}:{port}"
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise urllib3.exceptions.TimeoutError("no time left in the call's budget")
    timeout = urllib3.Timeout(total=remaining)
    pool: urllib3.HTTPConnectionPool
    if scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            address,
            port,
            server_hostname=host,
            assert_hostname=host,
            cert_reqs="CERT_REQUIRED",
            timeout=timeout,
            retries=False,
        )
    else:
        pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    response = pool.urlopen(
        method,
        path,
        body=body,
        headers=headers,
        redirect=False,
        retries=False,
        preload_content=False,
        assert_same_host=False,
        timeout=timeout,
    )
    return response, pool


def _read_capped(response: Any, cap: int, deadline: float) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise urllib3.exceptions.TimeoutError("response body took too long")
        chunk = response.read(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise EgressDenied(f"response body exceeds {cap} bytes")
        chunks.append(chunk)
