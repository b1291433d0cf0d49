"""`WebSettings`: the `[web]` section (`PREFLOOP_WEB_<FIELD>`) of the web app and `prefloop report`.

The address is the top-level `web_host` / `web_port` (like the collector's), so `prefloop up` checks
the port like every other service's. Off loopback the app requires a login: `check_bind` refuses
to start without `username` and `password`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefloop.auth.settings import is_loopback
from prefloop.errors import ConfigError
from prefloop.setting_fields import check_fields, setting
from schemas.records import BRIEF_CATEGORIES


@dataclass
class WebSettings:
    SECTION: ClassVar[str] = "web"

    daily_target: int = setting(
        43, ge=1,
        help="Preferences (pairs) to collect per day, shown in the arena and the report. The brief's collection plan "
             "is 100 / 300 / 500 a week (minimum / target / optimal); 43 a day is the 300-a-week target.",
    )
    username: str = setting("", help="Login of the web app (Gradio's auth). Required, with `password`, when `web_host` "
                                     "is not a loopback address; empty on loopback means no login.")
    password: str = setting("", secret=True, help="Password of that login; never shown or logged.")
    gateway_url: str = setting(
        "", help="Base URL of the OpenAI-compatible gateway the arena generates through (`…/v1`); empty means "
                 "the local `prefloop serve` at serve_host:serve_port.")
    gateway_api_key: str = setting("", secret=True, help="API key sent to the gateway when it requires one.")
    max_tokens: int = setting(256, ge=1, help="Tokens each arena answer may generate.")
    temperature: float = setting(0.7, ge=0, le=2, help="Sampling temperature of arena answers.")
    generation_timeout_s: float = setting(120.0, gt=0, help="Longest the arena waits for one answer.")
    battle_ttl_s: float = setting(
        7 * 86400.0, gt=0,
        help="How long a battle can be voted on; its one-vote record is kept as long, so a replayed vote stays refused.")
    concurrency: int = setting(
        8, ge=1, le=256,
        help="Requests of one kind (questions, votes, page refreshes) the app handles at once; more wait in Gradio's "
             "queue. Gradio's default of 1 would make every person wait for everyone else's answers.")
    bootstrap_rounds: int = setting(200, ge=10, le=10000, help="Bootstrap resamples behind each rating interval.")
    confidence: float = setting(0.95, gt=0.5, lt=1, help="Level of every interval shown: ratings, win rates, thumbs-up rates.")
    rating_prior_sd: float = setting(
        400.0, gt=0,
        help="Sd of the Gaussian prior on each Bradley–Terry rating (rating points): keeps a version that won all of "
             "its few battles finite; its pull fades as battles accumulate.")
    dashboard_days: int = setting(14, ge=1, le=366, help="Days of history the dashboard's time series show.")
    refresh_s: float = setting(30.0, ge=0, help="Seconds between refreshes of the arena's 'collected today' count; 0 turns "
                                                "them off. The leaderboard and dashboard refresh when their tab opens "
                                                "and on Refresh.")
    categories: list[str] = setting(
        factory=lambda: list(BRIEF_CATEGORIES),
        help="Values of the `category` tag the report's coverage expects (the brief's five by default).")

    def __post_init__(self) -> None:
        check_fields(self)
        if bool(self.username) != bool(self.password):
            raise ConfigError('"username" and "password" of [web] go together: set both or neither')


def check_bind(host: str, web: WebSettings) -> None:
    """Refuse to serve the arena beyond this machine without a login."""
    if not is_loopback(host) and not (web.username and web.password):
        raise ConfigError(f"web_host {host!r} is not a loopback address: set [web] username and password "
                          "(PREFLOOP_WEB_USERNAME / PREFLOOP_WEB_PASSWORD) so the app asks for a login, or bind 127.0.0.1")


def load_web_settings(settings) -> WebSettings:
    return settings.section(WebSettings)


__all__ = ["WebSettings", "BRIEF_CATEGORIES", "check_bind", "load_web_settings"]
