"""Preference pairs out of the analytics store, as a pairs file.

`prefloop pairs export` reads `preference_pairs FINAL` (one row per pair id, whatever the sink's retries
wrote) in pair-id order, a page at a time (keyset pagination: memory stays one page however many pairs
there are), and writes JSON lines:

- `full` (default): every PreferencePair field, the canonical line of a snapshot; `prefloop train --pairs`
  reads it back with sources, weights and model versions intact;
- `trl`: only `prompt`, `chosen` and `rejected`, what TRL's DPOTrainer and `datasets.load_dataset("json")` take.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefloop.analytics.columns import COLUMNS
from prefloop.analytics.store import sql_string, sql_time
from schemas import PairSource, PreferencePair
from trainer.pairs_io import pair_to_json

FORMATS = ("full", "trl")
PAGE_ROWS = 5000
_COLUMNS = tuple(c for c in COLUMNS["preference_pairs"] if c != "created_at")  # created_at: as epoch ms


@dataclass(frozen=True)
class PairFilter:
    """Which pairs to export; every condition given must hold."""

    since_ms: int | None = None  # created at or after
    sources: tuple[PairSource, ...] = ()  # any of these (all when empty)
    model_version: str | None = None  # the chosen answer's version
    limit: int | None = None

    def where(self) -> str:
        conditions = []
        if self.since_ms is not None:
            conditions.append(f"created_at >= {sql_time(self.since_ms)}")
        if self.sources:
            conditions.append(f"source IN ({', '.join(sql_string(s.value) for s in self.sources)})")
        if self.model_version is not None:
            conditions.append(f"chosen_model_version = {sql_string(self.model_version)}")
        return " AND ".join(conditions)


def page_query(pair_filter: PairFilter, after_pair_id: str, rows: int) -> str:
    """One page of pairs after `after_pair_id` in pair-id order (the table's sort key)."""
    conditions = [c for c in (pair_filter.where(), f"pair_id > {sql_string(after_pair_id)}" if after_pair_id else "") if c]
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (f"SELECT {', '.join(_COLUMNS)}, toUnixTimestamp64Milli(created_at) AS created_ms "
            f"FROM preference_pairs FINAL{where} ORDER BY pair_id LIMIT {int(rows)}")


def pair_from_row(row: dict[str, Any]) -> PreferencePair:
    return PreferencePair(
        pair_id=row["pair_id"], prompt_id=row["prompt_id"], prompt=row["prompt"], chosen=row["chosen"],
        rejected=row["rejected"], chosen_response_id=row["chosen_response_id"],
        rejected_response_id=row["rejected_response_id"], chosen_model_version=row["chosen_model_version"],
        rejected_model_version=row["rejected_model_version"], source=PairSource(row["source"]),
        weight=float(row["weight"]), created_at=int(row["created_ms"]))


def iter_pairs(store: Any, pair_filter: PairFilter, page_rows: int = PAGE_ROWS) -> Iterator[PreferencePair]:
    """Every pair the filter selects, in pair-id order, read a page at a time."""
    after, left = "", pair_filter.limit
    while left is None or left > 0:
        rows = page_rows if left is None else min(page_rows, left)
        page = store.query(page_query(pair_filter, after, rows)).dicts()
        for row in page:
            yield pair_from_row(row)
        if len(page) < rows:
            return
        after = page[-1]["pair_id"]
        if left is not None:
            left -= len(page)


def format_line(pair: PreferencePair, fmt: str) -> str:
    if fmt == "trl":
        return json.dumps({"prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected}, ensure_ascii=False)
    return pair_to_json(pair)


def export_pairs(store: Any, pair_filter: PairFilter, write: Callable[[str], Any], fmt: str = "full",
                 page_rows: int = PAGE_ROWS, progress: Callable[[int], None] | None = None) -> int:
    """Write one line per selected pair with `write`; returns how many. `progress(n)` after each page."""
    count = 0
    for count, pair in enumerate(iter_pairs(store, pair_filter, page_rows), start=1):
        write(format_line(pair, fmt) + "\n")
        if progress is not None and count % page_rows == 0:
            progress(count)
    return count
