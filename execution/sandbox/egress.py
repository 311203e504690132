"""Host side of `fetch` from the sandbox: the organization's egress policy, enforced per request.

Deny by default. A request goes out only when its host is allow-listed (exact or
``*.domain``), its scheme is http/https, and every address the name resolves to (or the
literal, in any spelling) is a global unicast address; the connection then goes to that
checked address (no second lookup, so no DNS rebinding), with the original Host header and
TLS SNI/verification for the name, and the connected peer is checked again. One deadline
covers the whole transfer: every socket operation (connect, TLS handshake, each send and
each recv) gets only the time left, so a server dripping one byte at a time cannot stretch
a fetch. Redirects are followed by hand, each hop checked the same way; crossing to another
origin drops every credential. Secret headers are added here, only over https and to the
port their pattern names (443 by default), and their values are scrubbed from everything
that goes back into the sandbox. `FetchScheduler` bounds how many fetches one organization
runs at once, so one organization's slow servers cannot take another's fetches.
"""

from __future__ import annotations

import base64
import functools
import http.client
import ipaddress
import json
import os
import re
import socket
import ssl
import threading
import time
import zlib
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, urljoin, urlsplit

from execution.sandbox.errors import EGRESS_DENIED, RATE_LIMITED, TIMEOUT, TOOL_ERROR
from execution.sandbox.limits import Limits

ALLOWED_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Hop-by-hop or framing headers the host computes itself; JS may not set them. Accept-Encoding
# is the host's too: it asks for identity so a secret echoed in the body cannot hide in gzip.
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
        "accept-encoding",
    }
)
# What a redirect to another origin must not carry (besides the secrets, never sent after one).
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "cookie2", "proxy-authorization"})
_READ_CHUNK = 65536

# Never contacted, whatever `ipaddress.is_global` of this Python says (3.11's misses several):
# the IANA special-purpose registries, multicast, and every IPv6 range that embeds an IPv4
# address which is not checked on its own below.
_DENIED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible ::a.b.c.d
        "::ffff:0:0:0/96",  # IPv4-translated (RFC 2765)
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "100::/64",
        "2001::/23",  # IETF protocol assignments, Teredo 2001::/32 among them
        "2001:db8::/32",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",  # site-local (deprecated, still routed by some stacks)
        "ff00::/8",
    )
)
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")
_IPV4_PART = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_HOST_CHARS = re.compile(r"^[a-z0-9._-]+$")


def _env_int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name) or default))
    except ValueError:
        return default


class EgressDenied(Exception):
    """A request (or one of its redirects) is not allowed by the policy."""

    code = EGRESS_DENIED


class FetchTimeout(Exception):
    """The fetch's whole-transfer deadline passed."""


@dataclass(frozen=True)
class EgressPolicy:
    """What one organization's bundles may reach; the empty policy denies everything."""

    allow_hosts: list[str] = field(default_factory=list)
    # Inject-host pattern (`host`, `*.domain`, optionally `:port`) -> {header name: header value}.
    secret_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # The secrets' raw values (without prefixes), scrubbed from responses in several encodings.
    secret_values: tuple[str, ...] = ()
    # Whose fetch lane (`FetchScheduler`) the fetches run in: one per organization.
    organization: str = ""
    max_redirects: int = 5
    # Tests only: lets a test reach its own HTTP server on 127.0.0.1/::1. Production
    # policies are built by the platform, which never sets it, and the CLI cannot.
    unsafe_allow_loopback_for_tests: bool = False
    # Tests only: the CA file that verifies the test's own HTTPS server (instead of the system's).
    unsafe_ca_file_for_tests: str = ""

    def host_allowed(self, host: str) -> bool:
        """Whether a (normalised) host name matches the allow list."""
        return any(_pattern_matches(pattern, host) for pattern in self.allow_hosts)

    def secrets_for(self, host: str, *, scheme: str = "https", port: int = 443) -> dict[str, str]:
        """Secret headers for a request to this host: over https only, to the pattern's port (443)."""
        if scheme != "https":
            return {}
        headers: dict[str, str] = {}
        for pattern, values in self.secret_headers.items():
            host_pattern, pattern_port = split_pattern_port(pattern)
            if pattern_port == port and _pattern_matches(host_pattern, host):
                headers.update(values)
        return headers

    def secret_header_names(self) -> frozenset[str]:
        """Every secret header name, lower-case."""
        return frozenset(name.lower() for values in self.secret_headers.values() for name in values)

    @functools.cached_property
    def scrubber(self) -> SecretScrubber:
        """What removes this policy's secrets from responses (built once per policy)."""
        values = set(self.secret_values)
        values.update(value for headers in self.secret_headers.values() for value in headers.values())
        return SecretScrubber(values)


def _ascii_digits(text: str) -> bool:
    """True for 0-9 only (`str.isdigit` also takes "²", which `int` refuses)."""
    return text.isascii() and text.isdigit()


def split_pattern_port(pattern: str) -> tuple[str, int]:
    """`api.example.com:8443` -> (`api.example.com`, 8443); no port means 443."""
    if pattern.startswith("["):
        host, _, rest = pattern[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and _ascii_digits(rest[1:]) else 443
    if pattern.count(":") == 1:
        host, _, port = pattern.partition(":")
        if _ascii_digits(port):
            return host, int(port)
    return pattern, 443


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


class SecretScrubber:
    """Masks secret values in bytes and text: raw, and for values of 8+ bytes also percent-,
    JSON-, hex- and base64-encoded (standard and URL-safe, at every byte alignment).

    Each occurrence is replaced by as many `*` as it has bytes, so lengths do not change.
    """

    MIN_ENCODED_LENGTH = 8

    def __init__(self, values: set[str]) -> None:
        variants: set[bytes] = set()
        for value in values:
            if not value:
                continue
            for raw in {value.encode("utf-8", "surrogatepass"), value.encode("latin-1", "replace")}:
                variants.add(raw)
                if len(raw) >= self.MIN_ENCODED_LENGTH:
                    variants.update(_encoded_forms(value, raw))
        ordered = sorted(variants, key=len, reverse=True)
        self._pattern = re.compile(b"|".join(re.escape(v) for v in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def scrub(self, data: bytes) -> bytes:
        """`data` with every secret occurrence masked."""
        if self._pattern is None:
            return data
        return self._pattern.sub(lambda match: b"*" * len(match.group(0)), data)

    def scrub_text(self, text: str) -> str:
        """`text` with every secret occurrence masked."""
        if self._pattern is None:
            return text
        return self.scrub(text.encode("utf-8", "surrogatepass")).decode("utf-8", "replace")

    def found_in(self, text: str) -> bool:
        """Whether `text` carries a secret in any covered form."""
        return self._pattern is not None and bool(self._pattern.search(text.encode("utf-8", "surrogatepass")))


def _encoded_forms(value: str, raw: bytes) -> set[bytes]:
    forms = {
        quote(raw, safe="").encode(),
        quote(raw, safe="").lower().encode(),
        quote_plus(raw, safe="").encode(),
        json.dumps(value)[1:-1].encode(),
        json.dumps(value, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass"),
        raw.hex().encode(),
        raw.hex().upper().encode(),
    }
    for shift in range(3):
        # The characters of base64(x + raw + y) that depend on `raw` only, for len(x) % 3 == shift.
        encoded = base64.b64encode(b"\0" * shift + raw)
        start = -(-shift * 8 // 6)
        end = (shift + len(raw)) * 8 // 6
        core = encoded[start:end]
        forms.add(core)
        forms.add(core.translate(bytes.maketrans(b"+/", b"-_")))
    return {form for form in forms if form}


# --- addresses ---------------------------------------------------------------------------------


def address_denied(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why an IP address may not be contacted (None when it is a global unicast address)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_denied(str(embedded), allow_loopback=allow_loopback)
        if allow_loopback and ip == ipaddress.IPv6Address("::1"):
            return None
    if allow_loopback and isinstance(ip, ipaddress.IPv4Address) and ip.is_loopback:
        return None
    if ip.is_loopback:
        return "loopback address"
    if ip.is_multicast:
        return "multicast address"
    if ip.is_link_local:
        return "link-local address"
    if ip.is_private:
        return "private address"
    if any(ip in net for net in _DENIED_NETWORKS if net.version == ip.version):
        return "reserved or non-global address"
    if not ip.is_global:
        return "non-public address"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, NAT64 well-known prefix, 6to4)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def ipv4_literal(host: str) -> str | None:
    """The dotted IPv4 address a host spells in any form (`2130706433`, `0x7f.1`, `0177.0.0.1`).

    As URL parsers do: a host whose last label is a number is an IPv4 address or malformed.
    """
    labels = host.split(".")
    if labels and labels[-1] == "":
        labels.pop()
    if not labels or not _IPV4_PART.match(labels[-1]):
        return None
    try:
        return socket.inet_ntoa(socket.inet_aton(host))
    except OSError as exc:
        raise EgressDenied(f"{host!r} is not a valid IPv4 address") from exc


def _host_from_url(hostname: str) -> tuple[str, str | None]:
    """The normalised host and, for an IP literal, the address it names."""
    host = normalise_host(hostname)
    try:
        return host, str(ipaddress.IPv6Address(host))
    except ValueError:
        pass
    if not _HOST_CHARS.match(host):
        raise EgressDenied(f"{host!r} is not a valid host name")
    literal = ipv4_literal(host)
    return (literal, literal) if literal else (host, None)


def _check_address(host: str, address: str, *, allow_loopback: bool) -> None:
    reason = address_denied(address, allow_loopback=allow_loopback)
    if reason:
        shown = host if host == address else f"{host!r} ({address})"
        raise EgressDenied(f"{shown} is a {reason}")


def _resolve(host: str, port: int, *, deadline: float, allow_loopback: bool) -> list[str]:
    """Every address of `host`, each checked (one bad record denies the name)."""
    box: dict[str, Any] = {}

    def lookup() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    # getaddrinfo has no timeout of its own: wait for it only until the deadline.
    resolver = threading.Thread(target=lookup, name="sandbox-egress-dns", daemon=True)
    resolver.start()
    resolver.join(max(0.0, deadline - time.monotonic()))
    if resolver.is_alive():
        raise FetchTimeout(f"resolving {host!r} took too long")
    if "error" in box:
        raise EgressDenied(f"cannot resolve {host!r}: {box['error']}")
    addresses = list(dict.fromkeys(str(info[4][0]) for info in box["infos"]))
    if not addresses:
        raise EgressDenied(f"{host!r} resolves to no address")
    for address in addresses:
        # A mixed answer is how rebinding attacks look: any non-global record denies the name.
        _check_address(host, address, allow_loopback=allow_loopback)
    return addresses


# --- sockets with one deadline -------------------------------------------------------------------


def _arm(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise FetchTimeout("the fetch ran out of time")
    sock.settimeout(remaining)


class _DeadlineSocket(socket.socket):
    """A TCP socket whose every blocking operation gets only the time left before `deadline`."""

    deadline = 0.0

    def connect(self, address: Any) -> None:
        _arm(self, self.deadline)
        super().connect(address)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        _arm(self, self.deadline)
        return super().recv(bufsize, flags)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: Any, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:
        _arm(self, self.deadline)  # CPython's sendall keeps one deadline across its partial sends
        super().sendall(data, flags)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS form of `_DeadlineSocket` (recv/recv_into go through `read`, sendall through `send`)."""

    deadline = 0.0

    def do_handshake(self, block: bool = False) -> None:
        _arm(self, self.deadline)  # the handshake keeps one deadline across its reads and writes
        super().do_handshake(block)

    def read(self, len: int = 1024, buffer: Any = None) -> Any:  # noqa: A002 - ssl's signature
        _arm(self, self.deadline)
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        _arm(self, self.deadline)
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        _arm(self, self.deadline)
        return super().send(data, flags)


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _DeadlineSSLSocket
    return context


def _connect(
    host: str, addresses: list[str], port: int, *, tls: bool, deadline: float, policy: EgressPolicy
) -> socket.socket:
    """A connected (and for https, verified) socket to the first checked address that answers."""
    last: OSError | None = None
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = deadline
        try:
            sock.connect((address, port))
            # The peer is the address checked above (never a second lookup); checked once more.
            _check_address(
                host, str(sock.getpeername()[0]), allow_loopback=policy.unsafe_allow_loopback_for_tests
            )
        except (OSError, EgressDenied) as exc:
            sock.close()
            if isinstance(exc, EgressDenied) or isinstance(exc, TimeoutError):
                raise
            last = exc
            continue
        if not tls:
            return sock
        try:
            wrapped = _tls_context(policy.unsafe_ca_file_for_tests).wrap_socket(
                sock, server_hostname=host, do_handshake_on_connect=False
            )
            assert isinstance(wrapped, _DeadlineSSLSocket)
            wrapped.deadline = deadline
            wrapped.do_handshake()
        except BaseException:
            sock.close()
            raise
        return wrapped
    raise last or OSError("no address to connect to")


# --- one fetch -----------------------------------------------------------------------------------


def _denied(message: str, code: str = EGRESS_DENIED) -> dict[str, Any]:
    return {"ok": False, "error": {"type": code, "message": message}}


def egress_fetch(
    request: dict[str, Any],
    *,
    policy: EgressPolicy,
    timeout_s: float,
    limits: Limits | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Perform one sandbox `fetch` under `policy`; return the fetch-result payload (never raises).

    The whole transfer (lookup, connect, TLS, request, headers, body, every redirect) ends by
    `deadline` (default: `timeout_s` from now). Nothing in the payload carries a secret.
    """
    limits = limits or Limits()
    if deadline is None:
        deadline = time.monotonic() + timeout_s
    try:
        result = _fetch(request, policy=policy, deadline=deadline, limits=limits)
    except EgressDenied as exc:
        result = _denied(str(exc))
    except (FetchTimeout, TimeoutError):
        result = _denied(f"fetch timed out after {timeout_s:.1f} s", TIMEOUT)
    except ssl.SSLError as exc:
        result = _denied(f"fetch failed: TLS error ({exc.reason or type(exc).__name__})", TOOL_ERROR)
    except (http.client.HTTPException, OSError, ValueError, zlib.error) as exc:
        result = _denied(f"fetch failed: {type(exc).__name__}", TOOL_ERROR)
    return _scrubbed(result, policy.scrubber)


def _scrubbed(result: dict[str, Any], scrubber: SecretScrubber) -> dict[str, Any]:
    if not scrubber:
        return result
    if not result["ok"]:
        result["error"]["message"] = scrubber.scrub_text(result["error"]["message"])
        return result
    body = base64.b64decode(result["body_b64"])
    result["body_b64"] = base64.b64encode(scrubber.scrub(body)).decode()
    result["url"] = scrubber.scrub_text(result["url"])
    result["statusText"] = scrubber.scrub_text(result["statusText"])
    result["headers"] = [
        [name, value]
        for name, value in result["headers"]
        if not scrubber.found_in(name) and not scrubber.found_in(value)
    ]
    return result


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        port = None
    return scheme, normalise_host(parts.hostname or ""), port


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
    headers_in = _js_headers(request.get("headers"))
    first_origin = _origin(url)
    with_credentials = True
    for hop in range(policy.max_redirects + 1):
        if with_credentials and _origin(url) != first_origin:
            # Cross-origin from here on: no secret and no credential JS set, even if it comes back.
            with_credentials = False
            dropped = _CREDENTIAL_HEADERS | policy.secret_header_names()
            headers_in = [(name, value) for name, value in headers_in if name.lower() not in dropped]
        response = _send_one(
            url, method, headers_in, body, policy=policy, deadline=deadline, with_credentials=with_credentials
        )
        try:
            location = response.getheader("location")
            if response.status in REDIRECT_STATUSES and location:
                target = urljoin(url, location)
                if policy.scrubber.found_in(target):
                    raise EgressDenied("a redirect would carry a secret in its URL")
                url = target
                if (
                    response.status == 303
                    and method != "HEAD"
                    or (response.status in (301, 302) and method == "POST")
                ):
                    method, body = "GET", None
                continue
            headers = response.getheaders()
            data = _read_body(response, headers, limits.fetch_response_bytes)
            return {
                "ok": True,
                "status": response.status,
                "statusText": response.reason or "",
                "url": url,
                "redirected": hop > 0,  # Response.redirected: the final url came from a redirect
                "headers": _response_headers(headers, policy),
                "body_b64": base64.b64encode(data).decode(),
            }
        finally:
            response.close()
            response.connection_to_close.close()
    raise EgressDenied(f"more than {policy.max_redirects} redirects")


def _js_headers(raw: Any) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for pair in raw or []:
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise EgressDenied("malformed request headers")
        name, value = str(pair[0]), str(pair[1])
        if any(ch in name + value for ch in "\r\n\0"):
            raise EgressDenied("header with a line break")
        if name.lower() not in _DROPPED_REQUEST_HEADERS:
            headers.append((name, value))
    return headers


class _Response(http.client.HTTPResponse):
    connection_to_close: http.client.HTTPConnection


def _send_one(
    url: str,
    method: str,
    headers_in: list[tuple[str, str]],
    body: bytes | None,
    *,
    policy: EgressPolicy,
    deadline: float,
    with_credentials: bool,
) -> _Response:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise EgressDenied(f"scheme {scheme or '(none)'!r} is not allowed")
    if parts.username is not None or parts.password is not None:
        raise EgressDenied("credentials in the URL are not allowed")
    if not parts.hostname:
        raise EgressDenied("URL has no host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError as exc:
        raise EgressDenied(f"bad port in {url!r}") from exc
    allow_loopback = policy.unsafe_allow_loopback_for_tests
    host, literal = _host_from_url(parts.hostname)
    if literal is not None:
        _check_address(host, literal, allow_loopback=allow_loopback)
    if not policy.host_allowed(host):
        raise EgressDenied(f"host {host!r} is not in the organization's allow list")
    if literal is not None:
        addresses = [literal]
    else:
        addresses = _resolve(host, port, deadline=deadline, allow_loopback=allow_loopback)
    secrets = policy.secrets_for(host, scheme=scheme, port=port) if with_credentials else {}
    secret_names = {name.lower() for name in secrets}
    headers = {name: value for name, value in headers_in if name.lower() not in secret_names}
    headers.update(secrets)
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    shown_host = f"[{host}]" if ":" in host else host
    headers["Host"] = shown_host if default_port else f"{shown_host}:{port}"
    headers["Accept-Encoding"] = "identity"
    sock = _connect(host, addresses, port, tls=scheme == "https", deadline=deadline, policy=policy)
    connection = http.client.HTTPConnection(addresses[0], port)
    connection.sock = sock
    connection.response_class = _Response
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
    except BaseException:
        connection.close()
        raise
    assert isinstance(response, _Response)
    response.connection_to_close = connection
    return response


def _response_headers(headers: list[tuple[str, str]], policy: EgressPolicy) -> list[list[str]]:
    names = policy.secret_header_names()
    out: list[list[str]] = []
    for name, value in headers:
        lower = name.lower()
        if lower in names:
            continue
        if lower in ("content-encoding", "content-length") and _decoder(headers) is not None:
            continue  # the body JS gets is the decoded one
        out.append([name, value])
    return out


def _decoder(headers: list[tuple[str, str]]) -> Any:
    encodings = [value.strip().lower() for name, value in headers if name.lower() == "content-encoding"]
    encoding = ",".join(encodings)
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
    # Anything else cannot be scrubbed of secrets, so it is not passed on (the host asked for identity).
    raise EgressDenied(f"unsupported content-encoding {encoding[:40]!r}")


def _read_body(response: http.client.HTTPResponse, headers: list[tuple[str, str]], cap: int) -> bytes:
    """The whole body (decoded if gzip/deflate), at most `cap` bytes; the socket keeps the deadline."""
    decoder = _decoder(headers)
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = response.read(_READ_CHUNK)
        if decoder is not None:
            chunk = decoder.decompress(chunk, cap + 1 - total) if chunk else decoder.flush()
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise EgressDenied(f"response body exceeds {cap} bytes")
        chunks.append(chunk)


# --- per-organization concurrency ----------------------------------------------------------------


@dataclass
class _Queued:
    future: Future[dict[str, Any]]
    request: dict[str, Any]
    policy: EgressPolicy
    timeout_s: float
    deadline: float
    limits: Limits


class FetchScheduler:
    """Runs sandbox fetches on threads, at most `per_organization` at once for each organization.

    An organization's fetches beyond that wait in its own queue (bounded; past the bound a fetch
    fails `rate_limited`), and a queued fetch whose deadline passes fails `timeout` right then.
    Other organizations never wait behind it: each has its own slots, and the threads are made
    as slots fill (their total is bounded by the organizations with calls in flight).
    """

    def __init__(self, per_organization: int | None = None, max_queued: int | None = None) -> None:
        self.per_organization = per_organization or _env_int("LIGHTFAST_SANDBOX_FETCHES_PER_ORG", 8)
        self.max_queued = max_queued or 16 * self.per_organization
        self._lock = threading.Condition()
        self._running: dict[str, int] = {}
        self._queued: dict[str, deque[_Queued]] = {}
        self._closed = False
        self._expiry: threading.Thread | None = None

    def submit(
        self,
        request: dict[str, Any],
        *,
        policy: EgressPolicy,
        timeout_s: float,
        limits: Limits,
    ) -> Future[dict[str, Any]]:
        """Start (or queue) one fetch in the policy's organization lane; the future never fails."""
        future: Future[dict[str, Any]] = Future()
        item = _Queued(future, request, policy, timeout_s, time.monotonic() + timeout_s, limits)
        org = policy.organization
        with self._lock:
            if self._closed:
                future.set_result(_denied("the sandbox is shutting down", TOOL_ERROR))
                return future
            if self._running.get(org, 0) < self.per_organization:
                self._running[org] = self._running.get(org, 0) + 1
                start = True
            elif len(self._queued.get(org, ())) >= self.max_queued:
                future.set_result(
                    _denied(
                        f"too many fetches waiting for this organization (at most {self.max_queued})",
                        RATE_LIMITED,
                    )
                )
                return future
            else:
                self._queued.setdefault(org, deque()).append(item)
                self._wake_expiry()
                start = False
        if start:
            threading.Thread(target=self._lane, args=(org, item), name="sandbox-egress", daemon=True).start()
        return future

    def running(self, organization: str) -> int:
        """How many fetches of this organization are in flight (not counting queued ones)."""
        with self._lock:
            return self._running.get(organization, 0)

    def shutdown(self) -> None:
        """Fail every queued fetch; running ones end at their deadlines."""
        with self._lock:
            self._closed = True
            queued = [item for items in self._queued.values() for item in items]
            self._queued.clear()
            self._lock.notify_all()
        for item in queued:
            if item.future.set_running_or_notify_cancel():
                item.future.set_result(_denied("the sandbox is shutting down", TOOL_ERROR))

    def _lane(self, org: str, item: _Queued | None) -> None:
        """Run fetches of one organization, one after another, while it has some queued."""
        while item is not None:
            if item.future.set_running_or_notify_cancel():
                try:
                    result = egress_fetch(
                        item.request,
                        policy=item.policy,
                        timeout_s=item.timeout_s,
                        limits=item.limits,
                        deadline=item.deadline,
                    )
                except Exception as exc:  # noqa: BLE001 - egress_fetch never raises; the slot must be freed
                    result = _denied(f"fetch failed: {type(exc).__name__}", TOOL_ERROR)
                item.future.set_result(result)
            with self._lock:
                queue = self._queued.get(org)
                item = queue.popleft() if queue else None
                if queue is not None and not queue:
                    del self._queued[org]
                if item is None:
                    self._running[org] -= 1
                    if not self._running[org]:
                        del self._running[org]

    def _wake_expiry(self) -> None:
        # Called with the lock held.
        if self._expiry is None or not self._expiry.is_alive():
            self._expiry = threading.Thread(
                target=self._expire_loop, name="sandbox-egress-expiry", daemon=True
            )
            self._expiry.start()
        self._lock.notify_all()

    def _expire_loop(self) -> None:
        """Fail queued fetches whose deadline passed before a slot freed; exit when none is queued."""
        while True:
            expired: list[_Queued] = []
            with self._lock:
                if self._closed or not self._queued:
                    self._expiry = None
                    return
                now = time.monotonic()
                for org, queue in list(self._queued.items()):
                    keep = deque(
                        item for item in queue if item.deadline > now and not item.future.cancelled()
                    )
                    expired.extend(item for item in queue if item.deadline <= now)
                    if keep:
                        self._queued[org] = keep
                    else:
                        del self._queued[org]
                nearest = min((item.deadline for q in self._queued.values() for item in q), default=now + 1)
                if not expired:
                    self._lock.wait(max(0.005, nearest - now))
            for item in expired:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_result(
                        _denied(
                            f"fetch timed out after {item.timeout_s:.1f} s waiting for one of the "
                            f"organization's {self.per_organization} concurrent fetch slots",
                            TIMEOUT,
                        )
                    )
