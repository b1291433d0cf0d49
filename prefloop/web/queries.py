"""The SQL behind the leaderboard, the dashboard and the report, on the analytics tables (README
"Analytics"). Each function runs one query and returns plain records; days are UTC dates
('YYYY-MM-DD'), instants epoch milliseconds. Fact tables are read with FINAL so every event counts once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from prefloop.analytics.store import sql_string, sql_time
from prefloop.web.ratings import Outcome
from schemas.records import CATEGORY_TAG


class Store(Protocol):
    def query(self, sql: str) -> Any: ...


@dataclass(frozen=True)
class DayRates:
    """One version's CHOICE results and thumbs on one day (the `win_rates` view rolled up to days)."""

    day: str
    version: str
    wins: int
    losses: int
    thumbs_up: int
    thumbs_down: int
    responses: int


@dataclass(frozen=True)
class DayCount:
    day: str
    key: str  # the pair source, or the drop reason
    count: int


@dataclass(frozen=True)
class DriftPoint:
    window_start: int
    feature: str
    psi: float
    samples: int


@dataclass(frozen=True)
class PromotionRow:
    occurred_at: int
    candidate: str
    baseline: str
    decision: str
    traffic_fraction: float
    reason: str


@dataclass(frozen=True)
class CategoryCount:
    category: str  # '' for responses without a category tag
    responses: int
    pairs: int  # pairs whose chosen response carries this category


def battles(store: Store, since_ms: int = 0) -> list[Outcome]:
    """CHOICE actions between responses of two different versions (arena votes and apps' choices alike),
    as winner-over-loser outcomes. A choice between two answers of one version rates nobody."""
    result = store.query(f"""
        SELECT toString(model_version) AS winner, toString(rejected_model_version) AS loser, count() AS n
        FROM action_facts FINAL
        WHERE kind = 'CHOICE' AND model_version != '' AND rejected_model_version != ''
          AND model_version != rejected_model_version AND occurred_at >= {sql_time(since_ms)}
        GROUP BY winner, loser ORDER BY winner, loser""")
    return [Outcome(w, l, 1.0, int(n)) for w, l, n in result.rows]


def day_rates(store: Store, since_ms: int) -> list[DayRates]:
    result = store.query(f"""
        SELECT toString(toDate(window_start)) AS day, model_version, sum(wins), sum(losses), sum(thumbs_up),
               sum(thumbs_down), sum(responses)
        FROM win_rates
        WHERE window_start >= toStartOfDay({sql_time(since_ms)}) AND model_version != ''
        GROUP BY day, model_version ORDER BY day, model_version""")
    return [DayRates(d, v, int(w), int(l), int(u), int(dn), int(r)) for d, v, w, l, u, dn, r in result.rows]


def pairs_by_day(store: Store, since_ms: int) -> list[DayCount]:
    result = store.query(f"""
        SELECT toString(toDate(created_at)) AS day, toString(source) AS source, count()
        FROM preference_pairs FINAL WHERE created_at >= {sql_time(since_ms)}
        GROUP BY day, source ORDER BY day, source""")
    return [DayCount(d, s, int(n)) for d, s, n in result.rows]


def drops_by_day(store: Store, since_ms: int) -> list[DayCount]:
    result = store.query(f"""
        SELECT toString(toDate(occurred_at)) AS day, toString(reason) AS reason, count()
        FROM pair_drops FINAL WHERE occurred_at >= {sql_time(since_ms)}
        GROUP BY day, reason ORDER BY day, reason""")
    return [DayCount(d, r, int(n)) for d, r, n in result.rows]


def pairs_since(store: Store, since_ms: int) -> int:
    return int(store.query(f"SELECT count() FROM preference_pairs FINAL WHERE created_at >= {sql_time(since_ms)}").scalar() or 0)


def drops_since(store: Store, since_ms: int) -> int:
    return int(store.query(f"SELECT count() FROM pair_drops FINAL WHERE occurred_at >= {sql_time(since_ms)}").scalar() or 0)


def input_drift(store: Store, since_ms: int) -> list[DriftPoint]:
    result = store.query(f"""
        SELECT toUnixTimestamp64Milli(window_start), feature, value, samples
        FROM drift_metrics FINAL
        WHERE kind = 'input' AND metric = 'psi' AND window_start >= {sql_time(since_ms)}
        ORDER BY window_start, feature""")
    return [DriftPoint(int(t), f, float(v), int(s)) for t, f, v, s in result.rows]


def promotions(store: Store, since_ms: int = 0) -> list[PromotionRow]:
    result = store.query(f"""
        SELECT toUnixTimestamp64Milli(occurred_at), candidate_version, baseline_version, toString(decision),
               traffic_fraction, reason
        FROM promotions FINAL WHERE occurred_at >= {sql_time(since_ms)}
        ORDER BY occurred_at, event_id""")
    return [PromotionRow(int(t), c, b, d, float(f), r) for t, c, b, d, f, r in result.rows]


def category_counts(store: Store, since_ms: int) -> list[CategoryCount]:
    """Responses per `category` tag in the period, and the pairs whose chosen response carries each."""
    result = store.query(f"""
        SELECT r.category, uniqExact(r.response_id) AS responses, countIf(p.pair_id != '') AS pairs
        FROM (
            SELECT response_id, tags['{CATEGORY_TAG}'] AS category
            FROM feedback_events FINAL
            WHERE event_type = 'response' AND occurred_at >= {sql_time(since_ms)}
        ) AS r
        LEFT JOIN (
            SELECT chosen_response_id, pair_id FROM preference_pairs FINAL WHERE created_at >= {sql_time(since_ms)}
        ) AS p ON p.chosen_response_id = r.response_id
        GROUP BY r.category ORDER BY responses DESC, r.category""")
    return [CategoryCount(c, int(n), int(p)) for c, n, p in result.rows]


def head_to_head(store: Store, first: str, second: str, since_ms: int = 0) -> tuple[int, int]:
    """CHOICE wins of `first` over `second` and of `second` over `first`."""
    f, s = sql_string(first), sql_string(second)
    row = store.query(f"""
        SELECT countIf(model_version = {f} AND rejected_model_version = {s}),
               countIf(model_version = {s} AND rejected_model_version = {f})
        FROM action_facts FINAL
        WHERE kind = 'CHOICE' AND occurred_at >= {sql_time(since_ms)}""").rows[0]
    return int(row[0]), int(row[1])


__all__ = ["battles", "day_rates", "pairs_by_day", "drops_by_day", "pairs_since", "drops_since", "input_drift",
           "promotions", "category_counts", "head_to_head", "DayRates", "DayCount", "DriftPoint", "PromotionRow",
           "CategoryCount"]
