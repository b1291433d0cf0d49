"""Everything the dashboard and the leaderboard show, gathered once from the analytics tables, the
registry, Redis, and turned into figures. The app and `prefloop report` both draw from here, so the
page and the file show the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import plotly.graph_objects as go

from prefloop.analytics.store import connect
from prefloop.settings import Settings
from prefloop.web import figures, queries
from prefloop.web.queries import DayCount, DayRates, DriftPoint, PromotionRow
from prefloop.web.ratings import Outcome, Rating, WinMatrix, leaderboard, win_matrix
from prefloop.web.settings import WebSettings
from prefloop.web.sources import LoopSources, RegistryRow, TriggerProgress

DAY_MS = 86_400_000


def utc_midnight_ms(now_ms: int | None = None) -> int:
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return now_ms - now_ms % DAY_MS


@dataclass
class DashboardData:
    since_ms: int
    day_rates: list[DayRates]
    pairs: list[DayCount]
    drops: list[DayCount]
    drift: list[DriftPoint]
    promotions: list[PromotionRow]
    registry: list[RegistryRow]
    trigger: TriggerProgress | None
    problems: list[str] = field(default_factory=list)


@dataclass
class LeaderboardData:
    outcomes: list[Outcome]
    ratings: list[Rating]
    matrix: WinMatrix


def gather_dashboard(settings: Settings, since_ms: int) -> DashboardData:
    """The dashboard's data since `since_ms`; raises AnalyticsError when the analytics store is unreachable."""
    sources = LoopSources(settings)
    store = connect(settings)
    try:
        data = DashboardData(
            since_ms=since_ms,
            day_rates=queries.day_rates(store, since_ms),
            pairs=queries.pairs_by_day(store, since_ms),
            drops=queries.drops_by_day(store, since_ms),
            drift=queries.input_drift(store, since_ms),
            promotions=queries.promotions(store, since_ms),
            registry=sources.registry(),
            trigger=sources.trigger(),
        )
    finally:
        store.close()
    data.problems = sources.problems
    return data


def dashboard_figures(data: DashboardData, web: WebSettings) -> dict[str, go.Figure]:
    """The dashboard's figures by name, in the order they are shown."""
    threshold = data.trigger.drift_threshold if data.trigger else None
    return {
        "win_rate": figures.rate_figure(data.day_rates, "win", web.confidence),
        "thumbs_up_rate": figures.rate_figure(data.day_rates, "thumbs", web.confidence),
        "pairs": figures.pairs_figure(data.pairs, data.drops),
        "drift": figures.drift_figure(data.drift, threshold),
        "trigger": figures.trigger_figure(data.trigger),
        "rollout": figures.rollout_figure(data.promotions),
        "registry": figures.registry_figure(data.registry),
    }


def gather_leaderboard(settings: Settings, web: WebSettings, since_ms: int = 0) -> LeaderboardData:
    store = connect(settings)
    try:
        outcomes = queries.battles(store, since_ms)
    finally:
        store.close()
    ratings = leaderboard(outcomes, rounds=web.bootstrap_rounds, confidence=web.confidence, prior_sd=web.rating_prior_sd)
    return LeaderboardData(outcomes, ratings, win_matrix(outcomes, order=[r.version for r in ratings]))


def leaderboard_figures(data: LeaderboardData, web: WebSettings) -> dict[str, go.Figure]:
    return {"ratings": figures.ratings_figure(data.ratings, web.confidence),
            "win_matrix": figures.win_matrix_figure(data.matrix)}


__all__ = ["DashboardData", "LeaderboardData", "gather_dashboard", "dashboard_figures", "gather_leaderboard",
           "leaderboard_figures", "utc_midnight_ms", "DAY_MS"]
