"""Who may talk to the server: Host names, browser origins (CORS) and API keys.

Three attacks, three checks, all before any route runs:
- DNS rebinding: a web page whose name resolves to 127.0.0.1 talks to the loopback server
  as "same origin". Its requests still carry `Host: evil.example`, so only loopback names and
  the names the server was configured with are accepted (behind a wildcard bind that
  requires keys, any name: there the key, which such a page lacks, protects).
- Cross-site requests from a browser: browsers send `Origin` on cross-origin POSTs (and
  preflight anything with JSON or an Authorization header); SDKs and curl send none. An
  Origin not configured (`--allow-origin`, APPLIANCE_ORIGINS) is refused, and no permissive
  CORS header is ever sent.
- Other machines: keys (the `--api-key-env` key or any key in the keys file) are required
  whenever one is configured, and always when the server listens beyond loopback.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from appliance.keys import KeyStore

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
ENV_KEY_NAME = "api-key-env"  # the name usage rows carry for the `--api-key-env` key
PREFLIGHT_METHODS = "GET, POST, OPTIONS"
# Always allowed in a preflight for a configured origin, beside whatever it asks for.
PREFLIGHT_HEADERS = ("authorization", "content-type", "x-api-key", "anthropic-version", "anthropic-beta")
EXPOSED_HEADERS = "x-request-id, x-appliance-route, x-appliance-reason, x-appliance-model, retry-after"


@dataclass(frozen=True)
class AccessPolicy:
    """What `create_app` enforces. Defaults: loopback Host names only, no browser origins,
    keys only if some are configured."""

    allowed_hosts: frozenset[str] = frozenset()  # names beyond loopback; "*": any Host
    allowed_origins: frozenset[str] = frozenset()  # exact origins, e.g. "http://localhost:3000"; "*": any
    api_key: str | None = None
    keys: KeyStore | None = None
    require_key: bool = False  # listening beyond loopback: no configured key means nobody gets in
    _hosts: frozenset[str] = field(init=False, repr=False, default=frozenset())

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hosts", frozenset(normal_host(h) for h in self.allowed_hosts))

    # -- Host --------------------------------------------------------------------------------
    def host_allowed(self, host_header: str | None) -> bool:
        if host_header is None or "*" in self._hosts:
            return True  # HTTP/1.0 clients may omit it; browsers never do
        name = normal_host(host_header)
        return is_loopback(name) or name in self._hosts

    # -- Origin ------------------------------------------------------------------------------
    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """A configured origin, or the server's own (same-origin requests carry Origin too)."""
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed_origins or origin in {o.rstrip("/").lower() for o in self.allowed_origins}:
            return True
        netloc = urlsplit(origin).netloc
        return bool(host_header) and netloc == (host_header or "").lower()

    def cors_configured(self, origin: str) -> bool:
        """Whether CORS headers go out for `origin` (configured ones only, never same-origin)."""
        origin = origin.rstrip("/").lower()
        return "*" in self.allowed_origins or origin in {o.rstrip("/").lower() for o in self.allowed_origins}

    # -- keys --------------------------------------------------------------------------------
    def keys_required(self) -> bool:
        return self.require_key or bool(self.api_key) or bool(self.keys and self.keys.records())

    def identify(self, given: str) -> str | None:
        """The name of the key `given` is (the env key's is ENV_KEY_NAME), or None."""
        if not given:
            return None
        name = None
        if self.api_key and hmac.compare_digest(given.encode(), self.api_key.encode()):
            name = ENV_KEY_NAME
        if self.keys is not None:
            name = self.keys.identify(given) or name
        return name


def normal_host(host: str) -> str:
    """`Host` header or configured name -> lower-case name without port or brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.rsplit(":", 1)[0]
    return host.rstrip(".")


def is_loopback(name: str) -> bool:
    """127.0.0.0/8, ::1 and the usual names for them."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def preflight_headers(origin: str, requested: str | None) -> list[tuple[bytes, bytes]]:
    """The answer to an allowed origin's preflight: its origin echoed (never `*`, so
    credentials work), our methods, and the headers it asked for plus the ones SDKs send."""
    asked = [h.strip().lower() for h in (requested or "").split(",") if h.strip()]
    allowed = list(dict.fromkeys([*PREFLIGHT_HEADERS, *asked]))
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", PREFLIGHT_METHODS.encode()),
        (b"access-control-allow-headers", ", ".join(allowed).encode("latin-1")),
        (b"access-control-max-age", b"600"),
        (b"vary", b"Origin"),
    ]


def cors_headers(origin: str) -> list[tuple[bytes, bytes]]:
    """Added to an actual response for a configured origin."""
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
        (b"vary", b"Origin"),
    ]
