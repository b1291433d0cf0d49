"""Versioned migrations: `migrations/NNNN_name.sql`, applied once each, in order, recorded in `schema_migrations`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from prefloop.analytics.store import AnalyticsError, _StoreMixin

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        # Statements are split on ";", so comments in migration files must not contain one.
        text = "\n".join(line for line in self.path.read_text().splitlines() if not line.strip().startswith("--"))
        return [s.strip() for s in text.split(";") if s.strip()]


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise AnalyticsError(f"migration file {path.name} should be named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise AnalyticsError(f"two migrations share a version number in {directory}")
    return found


def migrate(store: _StoreMixin, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not yet recorded; return those applied now."""
    store.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, applied_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in store.query("SELECT version FROM schema_migrations FINAL").rows}
    applied = []
    for migration in discover(directory):
        if migration.version in done:
            continue
        for statement in migration.statements():
            store.command(statement)
        store.insert_rows("schema_migrations", ["version", "name"], [[migration.version, migration.name]])
        applied.append(migration)
    return applied
