"""API keys: generated once, stored as SHA-256 digests, looked up by digest.

A key is `pfk_` and 32 random bytes (base64url). The settings file keeps `NAME:SHA256`; a
request's key is hashed and looked up among the digests. Looking up by digest leaks nothing
useful through timing: the digest of a guess says nothing about a valid key's digest.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from prefloop.auth.settings import AuthSettings

KEY_PREFIX = "pfk_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: str
    revoked: bool

    def __repr__(self) -> str:  # the digest stays out of logs
        return f"ApiKey(name={self.name!r}, revoked={self.revoked})"


class KeyRing:
    """The keys of one service, by digest."""

    def __init__(self, auth: AuthSettings) -> None:
        revoked = set(auth.revoked)
        self._by_digest: dict[str, ApiKey] = {}
        for entry in auth.keys:
            name, _, digest = entry.partition(":")
            digest = digest.strip().lower()
            self._by_digest[digest] = ApiKey(name, digest, name in revoked)

    @property
    def enabled(self) -> bool:
        return bool(self._by_digest)

    def lookup(self, key: str) -> ApiKey | None:
        return self._by_digest.get(hash_key(key))

    def names(self) -> list[ApiKey]:
        return sorted(self._by_digest.values(), key=lambda k: k.name)
