"""Drift: how far this window's inputs and preferences moved from the last training run's.

Input drift compares bucketed distributions (prompt length, response length, each tag such as
category) of the responses served in a window against the reference profile stored when the
last TrainingRequest was published (`drift_reference`, reference = its snapshot id). Before
any training run, the earliest window with enough data is the reference ("bootstrap").
Both PSI and Jensen-Shannon divergence are recorded.

Preference drift follows the production version (the one serving most responses in the
window): its thumbs-up rate and CHOICE win rate against its own baseline (the reference
period, else its first window with data). The row's value is current - baseline.

All reads are FINAL over fact tables keyed by event id; a window's rows are recomputed and
replace the previous ones (ReplacingMergeTree on computed_at), so reruns never double.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from prefloop.analytics.store import ch_time, sql_string
from schemas.records import RESERVED_TAG_PREFIX

# Length buckets (characters): upper bounds; the last bucket is open.
LENGTH_EDGES = (50, 100, 200, 400, 800, 1600, 3200)
OTHER = "(other)"
EPSILON = 1e-4  # floor of a bucket share, so empty buckets do not make PSI infinite
BOOTSTRAP = "bootstrap"


# --- math ---------------------------------------------------------------------------------------------------
def shares(counts: Mapping[str, float], buckets: Iterable[str]) -> dict[str, float]:
    """Shares over `buckets` (missing ones count 0), floored at EPSILON and renormalised."""
    keys = list(buckets)
    total = sum(counts.get(k, 0.0) for k in keys)
    if total <= 0:
        return {k: 1.0 / len(keys) for k in keys} if keys else {}
    raw = {k: max(counts.get(k, 0.0) / total, EPSILON) for k in keys}
    norm = sum(raw.values())
    return {k: v / norm for k, v in raw.items()}


def psi(current: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Population stability index: sum (p - q) ln(p / q) over the union of buckets."""
    buckets = sorted(set(current) | set(reference))
    p, q = shares(current, buckets), shares(reference, buckets)
    return sum((p[b] - q[b]) * math.log(p[b] / q[b]) for b in buckets)


def js_divergence(current: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint)."""
    buckets = sorted(set(current) | set(reference))
    tp = sum(current.get(b, 0.0) for b in buckets)
    tq = sum(reference.get(b, 0.0) for b in buckets)
    if tp <= 0 or tq <= 0:
        return 0.0
    p = {b: current.get(b, 0.0) / tp for b in buckets}
    q = {b: reference.get(b, 0.0) / tq for b in buckets}
    out = 0.0
    for b in buckets:
        m = (p[b] + q[b]) / 2
        if p[b] > 0:
            out += 0.5 * p[b] * math.log2(p[b] / m)
        if q[b] > 0:
            out += 0.5 * q[b] * math.log2(q[b] / m)
    return max(0.0, out)


def length_bucket(index: int) -> str:
    """Label of bucket `index` (1-based as ClickHouse's arrayFirstIndex gives; 0 = past the last edge)."""
    if index == 0:
        return f">={LENGTH_EDGES[-1]}"
    low = 0 if index == 1 else LENGTH_EDGES[index - 2]
    return f"{low}-{LENGTH_EDGES[index - 1] - 1}"


def fold_top(counts: Mapping[str, float], top: int) -> dict[str, float]:
    """Keep the `top` most frequent values; fold the rest into OTHER."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    out = dict(ordered[:top])
    rest = sum(v for _, v in ordered[top:])
    if rest:
        out[OTHER] = out.get(OTHER, 0.0) + rest
    return out


# --- profiles from ClickHouse -----------------------------------------------------------------------------------
Profile = dict[str, dict[str, float]]  # feature -> bucket -> count


def _between(start_ms: int, end_ms: int) -> str:
    return (f"occurred_at >= toDateTime64('{ch_time(start_ms)}', 3, 'UTC') AND "
            f"occurred_at < toDateTime64('{ch_time(end_ms)}', 3, 'UTC')")


def input_profile(store: Any, start_ms: int, end_ms: int, top_values: int) -> Profile:
    """Bucket counts of the responses that occurred in [start, end)."""
    edges = "[" + ",".join(str(e) for e in LENGTH_EDGES) + "]"
    where = f"event_type = 'response' AND {_between(start_ms, end_ms)}"
    profile: Profile = {}
    for feature, column in (("prompt_length", "prompt_chars"), ("response_length", "response_chars")):
        rows = store.query(f"SELECT arrayFirstIndex(x -> {column} < x, {edges}) AS b, count() FROM feedback_events "
                           f"FINAL WHERE {where} GROUP BY b").rows
        if rows:
            profile[feature] = {length_bucket(int(b)): float(n) for b, n in rows}
    # prefloop's own tags (the gateway's route) move with every rollout stage: not an input feature.
    rows = store.query(f"SELECT k, tags[k] AS v, count() FROM feedback_events FINAL ARRAY JOIN mapKeys(tags) AS k "
                       f"WHERE {where} AND NOT startsWith(k, {sql_string(RESERVED_TAG_PREFIX)}) GROUP BY k, v").rows
    tags: dict[str, dict[str, float]] = {}
    for key, value, n in rows:
        tags.setdefault(f"tag:{key}", {})[value] = float(n)
    for feature, counts in tags.items():
        profile[feature] = fold_top(counts, top_values)
    return profile


def preference_metrics(store: Any, start_ms: int, end_ms: int) -> dict[str, dict[str, tuple[float, int]]]:
    """Per model version: thumbs-up rate and CHOICE win rate in [start, end), with their sample sizes."""
    where = _between(start_ms, end_ms)
    out: dict[str, dict[str, tuple[float, int]]] = {}
    for version, up, down in store.query(
            f"SELECT model_version, countIf(kind = 'THUMBS_UP'), countIf(kind = 'THUMBS_DOWN') FROM action_facts "
            f"FINAL WHERE {where} GROUP BY model_version").rows:
        if up + down:
            out.setdefault(version, {})["thumbs_up_rate"] = (up / (up + down), int(up + down))
    for version, wins, losses in store.query(
            f"SELECT v, sum(w), sum(l) FROM (SELECT model_version AS v, count() AS w, 0 AS l FROM action_facts FINAL "
            f"WHERE kind = 'CHOICE' AND rejected_model_version != model_version AND {where} GROUP BY v UNION ALL "
            f"SELECT rejected_model_version AS v, 0 AS w, count() AS l FROM action_facts FINAL WHERE kind = 'CHOICE' "
            f"AND rejected_model_version != model_version AND {where} GROUP BY v) GROUP BY v").rows:
        if wins + losses:
            out.setdefault(version, {})["win_rate"] = (wins / (wins + losses), int(wins + losses))
    return out


def production_version(store: Any, start_ms: int, end_ms: int) -> str | None:
    rows = store.query(f"SELECT model_version, count() AS n FROM feedback_events FINAL WHERE event_type = 'response' "
                       f"AND {_between(start_ms, end_ms)} GROUP BY model_version ORDER BY n DESC, model_version "
                       f"LIMIT 1").rows
    return rows[0][0] if rows else None


# --- reference ---------------------------------------------------------------------------------------------------
@dataclass
class Reference:
    name: str
    profile: Profile
    preference: dict[str, dict[str, tuple[float, int]]]  # version -> metric -> (value, samples)


def store_reference(store: Any, name: str, end_ms: int, period_s: int, top_values: int) -> int:
    """Freeze the inputs and preferences of the `period_s` before `end_ms` as reference `name`; returns rows."""
    start_ms = end_ms - period_s * 1000
    rows = []
    for feature, counts in input_profile(store, start_ms, end_ms, top_values).items():
        total = sum(counts.values())
        rows += [[name, feature, bucket, n / total, int(n)] for bucket, n in counts.items()]
    for version, metrics in preference_metrics(store, start_ms, end_ms).items():
        rows += [[name, f"pref:{metric}", version, value, n] for metric, (value, n) in metrics.items()]
    store.insert_rows("drift_reference", ["reference", "feature", "bucket", "share", "samples"], rows)
    return len(rows)


def latest_reference(store: Any) -> str | None:
    rows = store.query("SELECT snapshot_id FROM training_requests FINAL ORDER BY occurred_at DESC LIMIT 1").rows
    return rows[0][0] if rows else None


def load_reference(store: Any, name: str) -> Reference | None:
    rows = store.query(f"SELECT feature, bucket, share, samples FROM drift_reference FINAL "
                       f"WHERE reference = {sql_string(name)}").rows
    if not rows:
        return None
    profile: Profile = {}
    preference: dict[str, dict[str, tuple[float, int]]] = {}
    for feature, bucket, share, samples in rows:
        if feature.startswith("pref:"):
            preference.setdefault(bucket, {})[feature[5:]] = (float(share), int(samples))
        else:
            profile.setdefault(feature, {})[bucket] = float(samples)
    return Reference(name, profile, preference)


# --- the job ---------------------------------------------------------------------------------------------------
DRIFT_COLUMNS = ["window_start", "window_end", "kind", "feature", "metric", "model_version", "value", "current",
                 "baseline", "samples", "reference"]


def window_bounds(now_ms: int, window_s: int) -> tuple[int, int]:
    size = window_s * 1000
    start = now_ms // size * size
    return start, start + size


def first_window_with_data(store: Any, window_s: int, min_samples: int, version: str | None = None) -> int | None:
    size = window_s
    cond = f" AND model_version = {sql_string(version)}" if version else ""
    rows = store.query(f"SELECT toUnixTimestamp(toStartOfInterval(occurred_at, INTERVAL {size} SECOND)) AS w, "
                       f"count() AS n FROM feedback_events FINAL WHERE event_type = 'response'{cond} GROUP BY w "
                       f"HAVING n >= {max(1, min_samples)} ORDER BY w LIMIT 1").rows
    return int(rows[0][0]) * 1000 if rows else None


def compute_window(store: Any, window_start_ms: int, window_s: int, min_samples: int, top_values: int,
                   reference: Reference | None = None) -> list[list[Any]]:
    """drift_metrics rows of one window (empty when it has too few samples or there is no reference)."""
    end_ms = window_start_ms + window_s * 1000
    current = input_profile(store, window_start_ms, end_ms, top_values)
    samples = int(sum(current.get("prompt_length", {}).values()))
    if samples < max(1, min_samples):
        return []
    if reference is None:
        name = latest_reference(store)
        reference = load_reference(store, name) if name else None
        if reference is None:
            boot = first_window_with_data(store, window_s, min_samples)
            if boot is None:
                return []
            reference = Reference(BOOTSTRAP, input_profile(store, boot, boot + window_s * 1000, top_values), {})
    rows: list[list[Any]] = []
    ws, we = ch_time(window_start_ms), ch_time(end_ms)
    for feature, counts in sorted(current.items()):
        ref = reference.profile.get(feature)
        if not ref:
            continue
        n = int(sum(counts.values()))
        rows.append([ws, we, "input", feature, "psi", "", psi(counts, ref), None, None, n, reference.name])
        rows.append([ws, we, "input", feature, "js", "", js_divergence(counts, ref), None, None, n, reference.name])
    version = production_version(store, window_start_ms, end_ms)
    if version is not None:
        now_metrics = preference_metrics(store, window_start_ms, end_ms).get(version, {})
        base = reference.preference.get(version)
        if base is None:  # the version's own first window with data
            first = first_window_with_data(store, window_s, 1, version)
            base = preference_metrics(store, first, first + window_s * 1000).get(version, {}) if first is not None else {}
        for metric, (value, n) in sorted(now_metrics.items()):
            if metric in base:
                rows.append([ws, we, "preference", metric, "delta", version, value - base[metric][0], value,
                             base[metric][0], n, reference.name])
    return rows


def run_drift(store: Any, now_ms: int | None, window_s: int, min_samples: int, top_values: int) -> int:
    """Recompute the current and the previous window; returns the rows written."""
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    start, _ = window_bounds(now_ms, window_s)
    rows: list[list[Any]] = []
    for window_start in (start - window_s * 1000, start):
        rows += compute_window(store, window_start, window_s, min_samples, top_values)
    if rows:
        store.insert_rows("drift_metrics", DRIFT_COLUMNS, rows)
    return len(rows)


def latest_input_drift(store: Any) -> float | None:
    """Max PSI over input features in the newest window with drift rows (the trigger's drift signal)."""
    rows = store.query("SELECT max(value) FROM drift_metrics FINAL WHERE kind = 'input' AND metric = 'psi' AND "
                       "window_start = (SELECT max(window_start) FROM drift_metrics WHERE kind = 'input')").rows
    value = rows[0][0] if rows else None
    return float(value) if value is not None else None
