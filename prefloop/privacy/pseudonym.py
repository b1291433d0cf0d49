"""Keyed pseudonyms of user ids: HMAC-SHA256 under a secret key, so nobody without the key can
tell which pseudonym is whose (a plain hash of an e-mail address is reversed by a dictionary)."""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import TypeVar

from prefloop.privacy.settings import PrivacySettings

R = TypeVar("R")
PREFIX = "p_"


def pseudonym(user_id: str, key: str) -> str:
    digest = hmac.new(key.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:32]


class Pseudonymiser:
    """Applied by the SDK's FeedbackClient to every record it sends (the collector sends through it)."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonymiser(key=(hidden))"

    @classmethod
    def from_settings(cls, privacy: PrivacySettings) -> "Pseudonymiser | None":
        return cls(privacy.user_id_key) if privacy.pseudonymise_user_ids else None

    def apply(self, record: R) -> R:
        """A copy of `record` with its user_id replaced (the caller's record is left as it was, so
        sending the same record twice sends the same pseudonym)."""
        user_id = getattr(record, "user_id", None)
        if not user_id:
            return record
        out = copy.copy(record)
        out.user_id = pseudonym(user_id, self._key)  # type: ignore[attr-defined]
        return out
