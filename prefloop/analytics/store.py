"""The analytics store: one small interface over ClickHouse, embedded (chDB) or a server.

Every query and insert goes through clickhouse-connect's `raw_query` / `raw_insert`
with text formats (JSONCompact out, JSONEachRow in), so the embedded store and a
ClickHouse server run the same statements and return the same values.

chDB lets one process own a data directory. The analytics service
(`prefloop.analytics.gateway`) is that owner; other processes reach it over loopback
HTTP with `GatewayStore`, which speaks the same two calls. `connect(settings)`
picks the right one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Protocol, Sequence
from urllib.parse import urlsplit

import requests

from prefloop.errors import PrefloopError
from prefloop.settings import Settings, redact_url

# UInt64 as JSON numbers, not strings, so rows read the same from every backend.
QUERY_SETTINGS = {"output_format_json_quote_64bit_integers": 0, "output_format_json_quote_64bit_floats": 0}
INSERT_SETTINGS = {"date_time_input_format": "best_effort", "input_format_skip_unknown_fields": 0}
# JSONEachRow: one object per line; JSONCompactEachRow: one list per line in the order of the columns.
INSERT_FORMATS = ("JSONEachRow", "JSONCompactEachRow")


class AnalyticsError(PrefloopError):
    """A query or insert was refused by ClickHouse/chDB, or the store could not be reached."""


@dataclass(frozen=True)
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None


def ch_time(ms: int) -> str:
    """Epoch milliseconds as the text every DateTime64(3) column and `toDateTime64(..., 3, 'UTC')` read:
    epoch seconds with milliseconds ("1700000000.123"; inserts use date_time_input_format=best_effort).
    Cheap enough for the streams' rows, which build one per event."""
    return f"{ms // 1000}.{ms % 1000:03d}"


def sql_string(text: str) -> str:
    """A ClickHouse string literal (for values that cannot be query parameters of every store; any text,
    NUL included: user ids are arbitrary)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0") + "'"


def sql_time(ms: int) -> str:
    """An instant (epoch milliseconds) as a ClickHouse DateTime64(3) expression in UTC."""
    return f"fromUnixTimestamp64Milli(toInt64({int(ms)}), 'UTC')"


def json_each_row(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    lines = [json.dumps(dict(zip(columns, row)), ensure_ascii=False, separators=(",", ":")) for row in rows]
    return ("\n".join(lines) + "\n").encode() if lines else b""


class AnalyticsStore(Protocol):
    def raw(self, sql: str, fmt: str = "JSONCompact") -> bytes: ...

    def insert_json(self, table: str, columns: Sequence[str], body: bytes, fmt: str = "JSONEachRow") -> None: ...

    def close(self) -> None: ...


class _StoreMixin:
    """Typed helpers on top of `raw` and `insert_json`."""

    def raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    def insert_json(self, table: str, columns: Sequence[str], body: bytes,
                    fmt: str = "JSONEachRow") -> None:  # pragma: no cover
        raise NotImplementedError

    def query(self, sql: str) -> QueryResult:
        payload = json.loads(self.raw(sql, "JSONCompact") or b'{"meta": [], "data": []}')
        meta = payload.get("meta", [])
        return QueryResult([m["name"] for m in meta], [m["type"] for m in meta], payload.get("data", []))

    def command(self, sql: str) -> None:
        self.raw(sql, "TabSeparated")

    def insert_rows(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        rows = list(rows)
        if rows:
            self.insert_json(table, columns, json_each_row(columns, rows))
        return len(rows)


class ClickHouseStore(_StoreMixin):
    """A clickhouse-connect client: a ClickHouse server over HTTP, or chDB in this process (`chdb:///path`)."""

    def __init__(self, dsn: str) -> None:
        import clickhouse_connect

        try:
            self.client = clickhouse_connect.get_client(dsn=dsn)
        except Exception as exc:
            raise AnalyticsError(f"cannot open analytics store {_redact(dsn)}: {_scrub(_first_line(exc), dsn)}") from exc
        self.dsn = dsn

    def raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        try:
            return self.client.raw_query(sql, settings=QUERY_SETTINGS, fmt=fmt)
        except Exception as exc:
            raise AnalyticsError(_scrub(_first_line(exc), self.dsn)) from exc

    def insert_json(self, table: str, columns: Sequence[str], body: bytes, fmt: str = "JSONEachRow") -> None:
        if fmt not in INSERT_FORMATS:
            raise AnalyticsError(f"insert format should be one of {', '.join(INSERT_FORMATS)}, got {fmt!r}")
        try:
            self.client.raw_insert(table, list(columns), insert_block=body, settings=INSERT_SETTINGS, fmt=fmt)
        except Exception as exc:
            raise AnalyticsError(f"insert into {table} failed: {_scrub(_first_line(exc), self.dsn)}") from exc

    def close(self) -> None:
        self.client.close()


class GatewayStore(_StoreMixin):
    """The embedded chDB store, reached through the analytics service that owns it."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def _post(self, path: str, body: bytes, params: dict[str, str]) -> bytes:
        try:
            resp = self.session.post(self.url + path, data=body, params=params, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise AnalyticsError(
                f"analytics service at {self.url} is not reachable ({type(exc).__name__}); start it with `prefloop up`"
            ) from exc
        if resp.status_code != 200:
            raise AnalyticsError(resp.text.strip().splitlines()[0] if resp.text.strip() else f"HTTP {resp.status_code}")
        return resp.content

    def raw(self, sql: str, fmt: str = "JSONCompact") -> bytes:
        return self._post("/raw", sql.encode(), {"format": fmt})

    def insert_json(self, table: str, columns: Sequence[str], body: bytes, fmt: str = "JSONEachRow") -> None:
        self._post("/insert", body, {"table": table, "columns": ",".join(columns), "format": fmt})

    def ping(self) -> bool:
        try:
            return self.session.get(self.url + "/ping", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def close(self) -> None:
        self.session.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _redact(dsn: str) -> str:
    return redact_url(dsn)


def _scrub(text: str, dsn: str) -> str:
    """An error message without the DSN's password, should the driver have quoted the URL."""
    password = urlsplit(dsn).password if "://" in dsn else None
    return text.replace(password, "***") if password else text


def connect(settings: Settings) -> _StoreMixin:
    """The store every prefloop process should use: the server when configured, else the analytics service."""
    if settings.clickhouse_url:
        return ClickHouseStore(settings.clickhouse_url)
    return GatewayStore(settings.analytics_url)


def open_for_command(settings: Settings) -> _StoreMixin:
    """The store of a one-off command (`prefloop sql`, `prefloop pairs export`): the configured server or the
    running analytics service, or, when nobody owns the embedded chDB directory, chDB opened in this process."""
    from prefloop.services.process import ManagedProcess

    owner = ManagedProcess.of(settings, "analytics").pid()
    if settings.embedded_analytics and owner is None:
        if not settings.chdb_path.exists():
            raise AnalyticsError(f"no analytics store at {settings.chdb_path}; run `prefloop up` first")
        return open_embedded(settings)
    return connect(settings)


def open_embedded(settings: Settings) -> ClickHouseStore:
    """Open chDB in this process. Only the owner (the analytics service, or a CLI with services down) may do this."""
    settings.chdb_path.mkdir(parents=True, exist_ok=True)
    return ClickHouseStore(f"chdb://{settings.chdb_path}")
