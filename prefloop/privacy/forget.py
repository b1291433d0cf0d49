"""`prefloop forget USER_ID`: a user's rows out of the analytics store, their responses out of every
later training snapshot.

1. The user's ids: the id given and, when a pseudonym key is set, its pseudonym (what the SDK and
   the collector sent while pseudonymisation was on).
2. The responses their events touch: responses they got, and responses they acted on (rated,
   voted, edited, chose or rejected), from every table with a user_id column.
3. A line in the forgotten-users ledger (prefloop/privacy/ledger.py), written first, so a crash
   before the deletes is finished by running the command again.
4. Delete (a mutation, waited for) from every MergeTree table with a user_id column, and from preference_pairs every pair
   whose chosen or rejected response is one of those responses (an EDIT pair's chosen text is the
   user's own words).

What stays: Kafka's topics keep the events until retention deletes them (see docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prefloop.analytics.store import connect, sql_string
from prefloop.errors import PrefloopError
from prefloop.privacy.ledger import ForgottenLedger
from prefloop.privacy.pseudonym import pseudonym
from prefloop.privacy.settings import PrivacySettings
from prefloop.settings import Settings

PAIRS_TABLE = "preference_pairs"
RESPONSE_COLUMNS = ("response_id", "rejected_response_id", "chosen_response_id")


@dataclass
class ForgetReport:
    ids_checked: int  # the id, and its pseudonym when a key is set
    response_ids: int
    deleted: dict[str, int] = field(default_factory=dict)  # table -> rows deleted
    ledger: str = ""


def _in_list(values: list[str]) -> str:
    return "(" + ", ".join(sql_string(v) for v in values) + ")"


def user_ids_of(settings: Settings, user_id: str) -> list[str]:
    privacy = settings.section(PrivacySettings)
    ids = [user_id]
    if privacy.user_id_key:
        ids.append(pseudonym(user_id, privacy.user_id_key))
    return ids


def forget_user(settings: Settings, user_id: str) -> ForgetReport:
    if not user_id.strip():
        raise PrefloopError("USER_ID should not be empty")
    ids = user_ids_of(settings, user_id)
    store = connect(settings)
    try:
        columns = store.query(
            "SELECT c.table, groupArray(c.name) FROM system.columns AS c "
            "INNER JOIN system.tables AS t ON t.database = c.database AND t.name = c.table "
            "WHERE c.database = currentDatabase() AND t.engine LIKE '%MergeTree' GROUP BY c.table ORDER BY c.table"
        ).rows
        with_user = {table: set(names) for table, names in columns if "user_id" in names}
        selects = [f"SELECT toString({col}) AS rid FROM {table} WHERE user_id IN {_in_list(ids)} AND {col} IS NOT NULL"
                   for table, names in with_user.items() for col in RESPONSE_COLUMNS if col in names]
        response_ids = sorted({r[0] for r in store.query(" UNION DISTINCT ".join(selects)).rows if r[0]}) if selects else []
        ledger = ForgottenLedger(settings.home)
        ledger.add(user_id, response_ids)
        report = ForgetReport(len(ids), len(response_ids), ledger=str(ledger.path))
        targets = [(table, f"user_id IN {_in_list(ids)}") for table in with_user]
        pair_columns = dict(columns).get(PAIRS_TABLE, [])
        if response_ids and "chosen_response_id" in pair_columns:
            rids = _in_list(response_ids)
            targets.append((PAIRS_TABLE, f"chosen_response_id IN {rids} OR rejected_response_id IN {rids}"))
        for table, where in targets:
            count = int(store.query(f"SELECT count() FROM {table} WHERE {where}").rows[0][0])
            if count:  # a mutation, waited for (mutations_sync): the rows are gone when the command returns
                store.command(f"ALTER TABLE {table} DELETE WHERE {where} SETTINGS mutations_sync = 2")
            report.deleted[table] = report.deleted.get(table, 0) + count
        return report
    finally:
        store.close()
