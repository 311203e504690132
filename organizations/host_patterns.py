"""Validation of the host patterns organizations allow-list (`api.example.com`, `*.example.com`)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from django.conf import settings

MAX_PATTERN_LENGTH = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOOPBACK_NAMES = ("localhost",)


class InvalidHostPattern(ValueError):
    """A host pattern or URL the organization may not use; the message says why."""


def loopback_allowed_for_tests() -> bool:
    """True only when the test suite has switched loopback egress on (never in production)."""
    return bool(getattr(settings, "LIGHTFAST_TEST_EGRESS_LOOPBACK", False))


def ca_file_for_tests() -> str:
    """The test suite's own CA file for its loopback HTTPS server ("" in production)."""
    if not loopback_allowed_for_tests():
        return ""
    return str(getattr(settings, "LIGHTFAST_TEST_EGRESS_CA_FILE", "") or "")


def _ip_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return _ip_refusal(embedded, allow_loopback=allow_loopback)
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address is never reachable from the sandbox"
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_link_local:
        return "only public unicast addresses are reachable from the sandbox"
    return None


def host_pattern_normalise(pattern: str, *, allow_loopback: bool | None = None) -> str:
    """The canonical form of an allow-list pattern (lower-case, IDNA); raises InvalidHostPattern."""
    if allow_loopback is None:
        allow_loopback = loopback_allowed_for_tests()
    raw = pattern.strip()
    if not raw:
        raise InvalidHostPattern("A host pattern cannot be empty.")
    if len(raw) > MAX_PATTERN_LENGTH:
        raise InvalidHostPattern(f"A host pattern has at most {MAX_PATTERN_LENGTH} characters.")
    if any(ch in raw for ch in "/?#@ \t\r\n"):
        raise InvalidHostPattern("Give a host name only: no scheme, path, user or spaces.")
    literal = raw.strip("[]")
    try:
        ip = ipaddress.ip_address(literal.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is not None:
        reason = _ip_refusal(ip, allow_loopback=allow_loopback)
        if reason:
            raise InvalidHostPattern(f"{raw!r}: {reason}.")
        return str(ip)
    if ":" in raw:
        raise InvalidHostPattern("Ports are not part of a host pattern; every port of the host is allowed.")
    host = raw.rstrip(".").lower()
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if host == "*":
        raise InvalidHostPattern("`*` would allow every host; list the hosts your bundles need.")
    if "*" in name:
        raise InvalidHostPattern("A wildcard is only allowed as the first label, as in `*.example.com`.")
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidHostPattern(f"{raw!r} is not a valid host name.") from exc
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise InvalidHostPattern(f"{raw!r} is not a valid host name.")
    if wildcard and len(labels) < 2:
        raise InvalidHostPattern(f"{raw!r} would allow a whole top-level domain; name a domain you use.")
    if wildcard and all(label.isdigit() for label in labels):
        raise InvalidHostPattern("Wildcards apply to names, not to IP addresses.")
    if not allow_loopback and (labels[-1] in _LOOPBACK_NAMES):
        raise InvalidHostPattern("localhost is never reachable from the sandbox.")
    return f"*.{name}" if wildcard else name


_PORT_SUFFIX = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<name>[^:\[\]]+)):(?P<port>[0-9]{1,5})$")


def secret_host_pattern_normalise(pattern: str, *, allow_loopback: bool | None = None) -> str:
    """A secret's inject-host pattern: a host pattern, optionally with `:port` (443 when absent)."""
    raw = pattern.strip()
    match = _PORT_SUFFIX.match(raw)
    if match is None:
        return host_pattern_normalise(raw, allow_loopback=allow_loopback)
    port = int(match.group("port"))
    if not 1 <= port <= 65535:
        raise InvalidHostPattern(f"{raw!r}: a port is a number from 1 to 65535.")
    host = host_pattern_normalise(match.group("v6") or match.group("name"), allow_loopback=allow_loopback)
    if port == 443:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def provider_base_url_check(url: str, *, allow_loopback: bool | None = None) -> str:
    """A model provider base URL the platform may call for an organization; raises InvalidHostPattern.

    The host calls this URL (not the sandbox), so it gets the same static checks as an
    allow-listed host: https (or http), a name or a public address, never loopback or private.
    """
    if allow_loopback is None:
        allow_loopback = loopback_allowed_for_tests()
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise InvalidHostPattern("The base URL must be an http(s) URL such as https://api.example.com/v1.")
    if parts.username is not None or parts.password is not None:
        raise InvalidHostPattern("Put the API key in api_key, not in the URL.")
    if parts.scheme == "http" and not allow_loopback:
        raise InvalidHostPattern("The base URL must use https: the API key travels with every request.")
    try:
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError as exc:
        raise InvalidHostPattern("The base URL has an invalid port.") from exc
    host_pattern_normalise(parts.hostname, allow_loopback=allow_loopback)
    return url.rstrip("/")
