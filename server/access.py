"""Who may open a WebSocket: which pages (by their `Origin`), and when a token is needed.

A browser tells the server which page opens a WebSocket (`Origin`), but a request's `Host` proves
nothing: a page on evil.example can point that name at this server's address (DNS rebinding) and
its requests then carry `Host: evil.example`. So an origin is checked against what the operator
configured and what the server knows of itself — its ports, the address a connection arrived on —
never against `Host`. Pure: no sockets."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAME = "localhost"
LOOPBACK_HOSTS = (LOOPBACK_NAME, "127.0.0.1", "::1")  # how a browser on this machine names the server
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # listening on every interface: the host names no address
TOKEN_BYTES = 24  # a generated token: 24 random bytes, 32 URL-safe characters

OriginKey = tuple[str, str, int]  # (scheme, host in lower case, IPv6 without brackets, port)


def is_loopback_host(host: str) -> bool:
    """Whether listening on `host` serves this machine only: localhost, 127.0.0.0/8 or ::1."""
    name = host.strip().rstrip(".").lower()
    if name == LOOPBACK_NAME:
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def origin_key(origin: str) -> OriginKey | None:
    """`scheme://host[:port]` in a form that compares equal however it is written (case, default
    port, trailing slash); None for anything else, such as `null` or a URL with a path."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.username or parts.password:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    return scheme, _host_key(parts.hostname), port or DEFAULT_PORTS[scheme]


@dataclass(frozen=True)
class OriginPolicy:
    """Which pages may open WebSockets, decided once the server knows its ports."""

    own: frozenset[OriginKey]  # the server's own pages: loopback, the configured host, public origins
    allowed: frozenset[OriginKey]  # other sites' pages the operator allows (--allow-origin)
    allowed_names: frozenset[str]  # the allow-list as written, for entries that are no URL ("null")
    any_origin: bool  # no allow-list and no public origin on a loopback-only server: any page
    scheme: str  # "https" with TLS, else "http": the scheme of a page served by this server

    def allows(self, origin: str, local_address: Any = None) -> bool:
        """Whether a page from `origin` may connect; `local_address` is the (ip, port, …) the
        connection arrived on: a page whose origin is that very address is the server's own."""
        if self.any_origin or origin in self.allowed_names:
            return True
        key = origin_key(origin)
        return key is not None and (key in self.own or key in self.allowed or key == self._local(local_address))

    def describe_own(self) -> str:
        return ", ".join(sorted(_origin_text(key) for key in self.own))

    def _local(self, address: Any) -> OriginKey | None:
        if not isinstance(address, tuple) or len(address) < 2:
            return None
        return self.scheme, _host_key(str(address[0])), int(address[1])


def origin_policy(
    host: str, ports: Iterable[int], tls: bool, public_origins: Iterable[str], allowed_origins: Iterable[str]
) -> OriginPolicy:
    """The policy of a server listening on `host` at `ports` (the bound ones, not 0). Its own pages
    are those from its loopback names, from the host it was told to listen on, and its public origins."""
    public_origins, allowed_origins = tuple(public_origins), tuple(allowed_origins)
    schemes = ("http", "https") if tls else ("http",)
    names = LOOPBACK_HOSTS if host.strip() in WILDCARD_HOSTS else (*LOOPBACK_HOSTS, _host_key(host.strip()))
    served = {(scheme, name, port) for scheme in schemes for name in names for port in ports}
    public = {key for key in map(origin_key, public_origins) if key is not None}
    return OriginPolicy(
        own=frozenset(served | public),
        allowed=frozenset(key for key in map(origin_key, allowed_origins) if key is not None),
        allowed_names=frozenset(allowed_origins),
        any_origin=not allowed_origins and not public_origins and is_loopback_host(host),
        scheme="https" if tls else "http",
    )


def _host_key(host: str) -> str:
    """A host name in lower case, or an IP address in its canonical form (IPv4-mapped as IPv4)."""
    name = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return name
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _origin_text(key: OriginKey) -> str:
    scheme, host, port = key
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" if port == DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{port}"
