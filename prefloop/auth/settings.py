"""`AuthSettings`: the keys a service accepts, its rate limit and its CORS allow-list.

Each HTTP service reads its own section of the settings file: `[collector_auth]` for the
collector, `[serve_auth]` for the gateway (`PREFLOOP_COLLECTOR_AUTH_<FIELD>`,
`PREFLOOP_SERVE_AUTH_<FIELD>` in the environment). Keys are stored as `NAME:SHA256` (the hex
SHA-256 of the key): the settings file never holds a key itself. `prefloop keys create`
writes the entry and prints the key once.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import ClassVar

from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting

NAMES = {"collector": "collector", "serve": "gateway"}  # service -> what messages call it
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class AuthSettings:
    keys: list[str] = setting(
        factory=list, secret=True,
        help="API keys the service accepts, each `NAME:SHA256` (hex SHA-256 of the key, as `printf %s KEY | sha256sum` "
             "prints it); `prefloop keys create NAME` adds one. Empty: no key is asked for, and only a loopback "
             "address may be bound (unless `insecure`).",
    )
    revoked: list[str] = setting(
        factory=list,
        help="Names of revoked keys: a request with one is answered 403 (`prefloop keys revoke NAME`).",
    )
    rate_limit_per_s: float = setting(
        0.0, ge=0,
        help="Requests per second each key may make, in this process (0: no limit); with no keys, per client "
             "address. Over it: 429 with Retry-After.",
    )
    rate_limit_burst: int = setting(50, ge=1, help="Requests a key may make at once above its rate (the bucket's size).")
    cors_origins: list[str] = setting(
        factory=list,
        help="Origins of browser apps allowed to call the service (`https://app.example.com`; `*` for any). "
             "Empty: no CORS headers, browsers refuse cross-origin calls.",
    )
    insecure: bool = setting(
        False, help="Serve on a non-loopback address without API keys (anyone who reaches it can call it).",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        self.keys = [entry.strip() for entry in self.keys if entry.strip()]
        names = set()
        for index, entry in enumerate(self.keys):
            name, _, digest = entry.partition(":")
            # The entry itself is never shown: a key pasted here by mistake must not reach a log.
            if not _NAME.match(name) or not _SHA256_HEX.match(digest.strip().lower()):
                raise ConfigError(f'"keys" entry {index + 1} should be NAME:SHA256 (a name, then the hex SHA-256 of the '
                                  "key; `prefloop keys create NAME` writes one), not the key itself")
            if name in names:
                raise ConfigError(f'"keys": the name {name!r} is used twice')
            names.add(name)
        unknown = [name for name in self.revoked if name not in names]
        if unknown:
            raise ConfigError(f'"revoked" names keys that are not in "keys": {", ".join(unknown)}')
        for origin in self.cors_origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ConfigError(f'"cors_origins" entries should be scheme://host[:port] without a path, or *; got {origin!r}')


@dataclass
class CollectorAuthSettings(AuthSettings):
    """The collector's keys, rate limit and CORS origins."""

    SECTION: ClassVar[str] = "collector_auth"


@dataclass
class ServeAuthSettings(AuthSettings):
    """The gateway's keys, rate limit and CORS origins."""

    SECTION: ClassVar[str] = "serve_auth"


AUTH_SETTINGS: dict[str, type[AuthSettings]] = {"collector": CollectorAuthSettings, "serve": ServeAuthSettings}


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_bind(host: str, auth: AuthSettings, service: str, insecure: bool = False) -> None:
    """Refuse to serve on a non-loopback address without API keys, unless told it is meant."""
    if is_loopback(host) or auth.keys or insecure or auth.insecure:
        return
    section = AUTH_SETTINGS[service].SECTION
    raise ConfigError(f"refusing to serve the {NAMES.get(service, service)} on {host} without API keys: add one with "
                      f"`prefloop keys create NAME --service {service}` ([{section}] keys), bind 127.0.0.1, "
                      "or pass --insecure")
