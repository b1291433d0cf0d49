"""Live figures of the canary and of production over the same window, read from ClickHouse.

Both arms are read by the same two queries with the same time window (from the rollout's start
to now), so they are comparable: `feedback_events` gives each version's responses, errors, crashes
(errors whose kind — the text before the first ':' — is "crash") and latencies; `action_facts`
gives the judgements users made of each version's responses (thumbs, ratings) and the CHOICE
votes between the canary and production. The figures are counts and sums, so `bounds` can turn
them into confidence sequences; the stage's own counts (since the stage began) decide whether the
stage has seen enough data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

from prefloop.analytics.store import sql_string, sql_time

CRASH_KIND = "crash"


class Store(Protocol):
    def query(self, sql: str) -> Any: ...


@dataclass(frozen=True)
class ArmMetrics:
    """One version's figures over the window."""

    version: str
    responses: int = 0
    errors: int = 0
    crashes: int = 0
    timed: int = 0  # responses that carry a latency
    slow: int = 0  # of those, slower than the p99 latency threshold
    p99_latency_ms: float | None = None
    thumbs_up: int = 0
    thumbs_down: int = 0
    ratings: int = 0
    rating_sum: float = 0.0

    @property
    def thumbs(self) -> int:
        return self.thumbs_up + self.thumbs_down

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.responses if self.responses else None

    @property
    def crash_rate(self) -> float | None:
        return self.crashes / self.responses if self.responses else None

    @property
    def slow_share(self) -> float | None:
        return self.slow / self.timed if self.timed else None

    @property
    def thumbs_up_rate(self) -> float | None:
        return self.thumbs_up / self.thumbs if self.thumbs else None

    @property
    def mean_rating(self) -> float | None:
        return self.rating_sum / self.ratings if self.ratings else None


@dataclass(frozen=True)
class LiveMetrics:
    canary: ArmMetrics
    production: ArmMetrics
    choice_wins: int = 0  # CHOICE votes for a canary response over a production one
    choice_losses: int = 0  # CHOICE votes for a production response over a canary one
    stage_responses: int = 0  # canary responses since the stage began
    stage_feedback: int = 0  # canary judgements (thumbs, ratings, CHOICE votes against production) since then
    since_ms: int = 0
    stage_since_ms: int = 0

    @property
    def choices(self) -> int:
        return self.choice_wins + self.choice_losses

    @property
    def choice_win_rate(self) -> float | None:
        return self.choice_wins / self.choices if self.choices else None

    def figures(self) -> dict[str, float]:
        """Every figure as a flat name → number map (the PromotionEvent's `metrics`); unknowns left out."""
        out: dict[str, float] = {}
        for prefix, arm in (("canary", self.canary), ("production", self.production)):
            for name in ("responses", "errors", "crashes", "timed", "slow", "thumbs_up", "thumbs_down", "ratings"):
                out[f"{prefix}_{name}"] = float(getattr(arm, name))
            for name in ("error_rate", "crash_rate", "slow_share", "p99_latency_ms", "thumbs_up_rate", "mean_rating"):
                value = getattr(arm, name)
                if value is not None and math.isfinite(value):
                    out[f"{prefix}_{name}"] = float(value)
        out["choice_wins"] = float(self.choice_wins)
        out["choice_losses"] = float(self.choice_losses)
        if self.choice_win_rate is not None:
            out["canary_choice_win_rate"] = self.choice_win_rate
        out["stage_responses"] = float(self.stage_responses)
        out["stage_feedback"] = float(self.stage_feedback)
        return out




def responses_sql(canary: str, production: str, since_ms: int, stage_since_ms: int, slow_ms: float) -> str:
    c, p = sql_string(canary), sql_string(production)
    arms = []
    for prefix, v in (("c", c), ("p", p)):
        arms.append(f"""
        countIf(model_version = {v}) AS {prefix}_responses,
        countIf(model_version = {v} AND ifNull(error, '') != '') AS {prefix}_errors,
        countIf(model_version = {v} AND lower(trimBoth(splitByChar(':', ifNull(error, ''))[1])) = '{CRASH_KIND}')
            AS {prefix}_crashes,
        countIf(model_version = {v} AND latency_ms IS NOT NULL) AS {prefix}_timed,
        countIf(model_version = {v} AND ifNull(latency_ms, 0) > {float(slow_ms)}) AS {prefix}_slow,
        quantileExactIf(0.99)(toFloat64(ifNull(latency_ms, 0)), model_version = {v} AND latency_ms IS NOT NULL)
            AS {prefix}_p99""")
    return f"""
    SELECT {",".join(arms)},
        countIf(model_version = {c} AND occurred_at >= {sql_time(stage_since_ms)}) AS stage_responses
    FROM feedback_events FINAL
    WHERE event_type = 'response' AND model_version IN ({c}, {p}) AND occurred_at >= {sql_time(since_ms)}"""


def actions_sql(canary: str, production: str, since_ms: int, stage_since_ms: int) -> str:
    c, p = sql_string(canary), sql_string(production)
    arms = []
    for prefix, v in (("c", c), ("p", p)):
        arms.append(f"""
        countIf(model_version = {v} AND kind = 'THUMBS_UP') AS {prefix}_up,
        countIf(model_version = {v} AND kind = 'THUMBS_DOWN') AS {prefix}_down,
        countIf(model_version = {v} AND kind = 'RATING' AND rating IS NOT NULL) AS {prefix}_ratings,
        sumIf(toFloat64(ifNull(rating, 0)), model_version = {v} AND kind = 'RATING') AS {prefix}_rating_sum""")
    judged = (f"(model_version = {c} AND kind IN ('THUMBS_UP', 'THUMBS_DOWN', 'RATING')) OR (kind = 'CHOICE' AND "
              f"((model_version = {c} AND rejected_model_version = {p}) OR (model_version = {p} AND rejected_model_version = {c})))")
    return f"""
    SELECT {",".join(arms)},
        countIf(kind = 'CHOICE' AND model_version = {c} AND rejected_model_version = {p}) AS wins,
        countIf(kind = 'CHOICE' AND model_version = {p} AND rejected_model_version = {c}) AS losses,
        countIf(({judged}) AND occurred_at >= {sql_time(stage_since_ms)}) AS stage_feedback
    FROM action_facts FINAL
    WHERE (model_version IN ({c}, {p}) OR rejected_model_version IN ({c}, {p})) AND occurred_at >= {sql_time(since_ms)}"""


def _row(store: Store, sql: str) -> dict[str, Any]:
    rows = store.query(sql).dicts()
    return rows[0] if rows else {}


def _int(row: dict[str, Any], name: str) -> int:
    return int(row.get(name) or 0)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_metrics(store: Store, canary: str, production: str, since_ms: int, stage_since_ms: int,
                 slow_ms: float) -> LiveMetrics:
    """Both arms' figures from `since_ms` to now, and the canary's counts since `stage_since_ms`."""
    r = _row(store, responses_sql(canary, production, since_ms, stage_since_ms, slow_ms))
    a = _row(store, actions_sql(canary, production, since_ms, stage_since_ms))

    def arm(prefix: str, version: str) -> ArmMetrics:
        timed = _int(r, f"{prefix}_timed")
        return ArmMetrics(
            version=version, responses=_int(r, f"{prefix}_responses"), errors=_int(r, f"{prefix}_errors"),
            crashes=_int(r, f"{prefix}_crashes"), timed=timed, slow=_int(r, f"{prefix}_slow"),
            p99_latency_ms=_float_or_none(r.get(f"{prefix}_p99")) if timed else None,
            thumbs_up=_int(a, f"{prefix}_up"), thumbs_down=_int(a, f"{prefix}_down"),
            ratings=_int(a, f"{prefix}_ratings"), rating_sum=float(a.get(f"{prefix}_rating_sum") or 0.0),
        )

    return LiveMetrics(
        canary=arm("c", canary), production=arm("p", production),
        choice_wins=_int(a, "wins"), choice_losses=_int(a, "losses"),
        stage_responses=_int(r, "stage_responses"), stage_feedback=_int(a, "stage_feedback"),
        since_ms=since_ms, stage_since_ms=stage_since_ms,
    )
