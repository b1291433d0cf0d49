"""`[privacy]` settings (`PREFLOOP_PRIVACY_<FIELD>`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting

MIN_KEY_CHARS = 16


@dataclass
class PrivacySettings:
    SECTION: ClassVar[str] = "privacy"

    pseudonymise_user_ids: bool = setting(
        False,
        help="Replace every user_id by a keyed HMAC of it (`p_` + 32 hex digits) in the SDK and the collector, "
             "before the event is encoded: raw user ids never reach Kafka, ClickHouse or a training snapshot. "
             "The same user always gets the same pseudonym, so per-user rules (one vote per voter) still hold.",
    )
    user_id_key: str = setting(
        "", secret=True,
        help="The HMAC key of the pseudonyms (at least 16 characters; e.g. `openssl rand -hex 32`). Keep it secret "
             "and stable: a new key gives every user a new pseudonym.",
    )

    def __post_init__(self) -> None:
        check_fields(self)
        if self.pseudonymise_user_ids and len(self.user_id_key) < MIN_KEY_CHARS:
            raise ConfigError(f'"user_id_key" should be at least {MIN_KEY_CHARS} characters when pseudonymise_user_ids '
                              "is on (set PREFLOOP_PRIVACY_USER_ID_KEY, e.g. from `openssl rand -hex 32`)")
