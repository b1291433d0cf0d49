"""One settings object for every prefloop process.

Precedence, lowest to highest: the dataclass defaults below, the config file
(`$PREFLOOP_CONFIG`, else `./prefloop.toml` when present), then environment
variables. Core settings read `PREFLOOP_<FIELD>` (e.g. `PREFLOOP_KAFKA_PORT`) and the
file's top level; a subsystem's section (streams, trainer, …) reads
`PREFLOOP_<SECTION>_<FIELD>` and the file's `[section]` table. Every field is
documented where it is declared; the README lists them all.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from prefloop.errors import ConfigError

T = TypeVar("T")

ENV_PREFIX = "PREFLOOP_"
SECRET_FIELDS = frozenset({"redis_password"})


def redact_url(url: str) -> str:
    """The URL with its user info's password replaced: `http://user:***@host:8123/db`."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int


@dataclass(repr=False)
class Settings:
    # Where every local service keeps its data, logs and PID files.
    home: Path = Path(".prefloop")
    # Kafka (KRaft, single node) started by `prefloop up`.
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    # JVM heap of the local broker; bounded so the broker fits beside the trainer.
    kafka_heap: str = "768m"
    kafka_version: str = "4.1.1"
    # Bootstrap servers of an external cluster; empty means the local broker.
    kafka_bootstrap: str = ""
    # Redis (Debian's redis-server) started by `prefloop up`; `redis_url` set means an external one
    # (`redis://:PASSWORD@host:6379/0`, or `rediss://…` for TLS).
    redis_port: int = 16379
    redis_url: str = ""
    # Password of the local redis-server (its requirepass) and of every client of it; never printed.
    redis_password: str = ""
    # Analytics store: empty means embedded chDB under `home`, owned by the analytics
    # service and reached through it; `http://user:pass@host:8123/db` means a ClickHouse server.
    clickhouse_url: str = ""
    # Loopback port of the analytics service that owns the embedded chDB store.
    analytics_port: int = 18123
    # HTTP collector for non-Python apps.
    collector_host: str = "127.0.0.1"
    collector_port: int = 18080
    collector_max_body_bytes: int = 1_048_576
    # Most events one request may carry (a 1 MiB body of tiny bad items would otherwise mean 500k checks).
    collector_max_events: int = 5_000
    # OpenAI-compatible serving gateway (`prefloop serve`); its own knobs are the [serve] section.
    # Loopback by default: another address needs API keys ([serve_auth], prefloop/auth/).
    serve_host: str = "127.0.0.1"
    serve_port: int = 18000
    # The web app (`prefloop web`: arena, leaderboard, dashboard); its own knobs are the [web] section.
    # Loopback by default: another address needs [web] username and password.
    web_host: str = "127.0.0.1"
    web_port: int = 17860
    # Partition counts of the contract topics; all are created explicitly at start-up.
    responses_partitions: int = 8
    actions_partitions: int = 8
    pairs_partitions: int = 8
    dlq_partitions: int = 2
    control_partitions: int = 1
    # How long `up` waits for each service to become healthy before reporting its log.
    start_timeout_s: float = 60.0
    # Where fetched Kafka jars and built tiny models are cached; shared across homes.
    cache_dir: Path = Path.home() / ".cache" / "prefloop"

    def __post_init__(self) -> None:
        self.home = Path(self.home).expanduser().resolve()
        self.cache_dir = Path(self.cache_dir).expanduser().resolve()
        for name in ("kafka_port", "kafka_controller_port", "redis_port", "analytics_port", "collector_port", "serve_port",
                     "web_port"):
            port = getattr(self, name)
            if not 1 <= port <= 65535:
                raise ConfigError(f'"{name}" should be a TCP port between 1 and 65535, got {port}')
        for name in ("responses_partitions", "actions_partitions", "pairs_partitions", "dlq_partitions", "control_partitions"):
            if getattr(self, name) < 1:
                raise ConfigError(f'"{name}" should be greater than zero, got {getattr(self, name)}')
        if self.collector_max_events < 1:
            raise ConfigError(f'"collector_max_events" should be greater than zero, got {self.collector_max_events}')
        if self.collector_max_body_bytes < 1024:
            raise ConfigError(f'"collector_max_body_bytes" should be at least 1024, got {self.collector_max_body_bytes}')

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def redis_dsn(self) -> str:
        """The URL every Redis client connects with; it may hold a password: print `redact_url(…)` of it."""
        if self.redis_url:
            return self.redis_url
        auth = f":{quote(self.redis_password, safe='')}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def __repr__(self) -> str:
        # Secrets stay out of logs and tracebacks: URL passwords masked, redis_password hidden.
        shown = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in SECRET_FIELDS:
                value = "(hidden)" if value else ""
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def embedded_analytics(self) -> bool:
        return not self.clickhouse_url

    @property
    def chdb_path(self) -> Path:
        return self.home / "chdb"

    @property
    def analytics_url(self) -> str:
        """Where clients send queries: the ClickHouse server, or the analytics service owning chDB."""
        return self.clickhouse_url or f"http://127.0.0.1:{self.analytics_port}"

    @property
    def collector_url(self) -> str:
        return f"http://{self.collector_host}:{self.collector_port}"

    @property
    def serve_url(self) -> str:
        return f"http://{self.serve_host}:{self.serve_port}"

    @property
    def web_url(self) -> str:
        return f"http://{self.web_host}:{self.web_port}"

    def topics(self) -> list[TopicSpec]:
        from prefloop import topics

        return [
            TopicSpec(topics.RESPONSES, self.responses_partitions),
            TopicSpec(topics.ACTIONS, self.actions_partitions),
            TopicSpec(topics.PAIRS, self.pairs_partitions),
            TopicSpec(topics.DLQ, self.dlq_partitions),
            TopicSpec(topics.TRAINING_REQUESTS, self.control_partitions),
            TopicSpec(topics.TRAINING_RESULTS, self.control_partitions),
            TopicSpec(topics.PROMOTIONS, self.control_partitions),
        ]

    def section(self, cls: type[T], name: str) -> T:
        """Load a subsystem's settings dataclass from the same file and environment."""
        return load_dataclass(cls, section=name, config=self._config)

    @cached_property
    def _config(self) -> dict[str, Any]:
        return read_config_file()


def read_config_file(path: Path | None = None) -> dict[str, Any]:
    if path is None:
        env_path = os.environ.get(ENV_PREFIX + "CONFIG")
        if env_path:
            path = Path(env_path)
            if not path.is_file():
                raise ConfigError(f"PREFLOOP_CONFIG points at {path}, which is not a file")
        else:
            path = Path("prefloop.toml")
            if not path.is_file():
                return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _coerce(raw: Any, typ: Any, name: str) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f'"{name}" should be true or false, got {raw!r}')
    if typ in (int, float):
        try:
            return typ(raw)
        except (TypeError, ValueError):
            raise ConfigError(f'"{name}" should be a{"n integer" if typ is int else " number"}, got {raw!r}') from None
    if typ is Path:
        return Path(str(raw))
    if typ is str:
        return str(raw)
    if origin in (list, tuple):
        items = raw if isinstance(raw, list) else [s.strip() for s in str(raw).split(",") if s.strip()]
        (inner,) = typing.get_args(typ)[:1]
        return origin(_coerce(i, inner, name) for i in items)
    if origin is dict:
        if isinstance(raw, dict):
            return raw
        # env form: "a=1.0,b=2.0"
        key_t, val_t = typing.get_args(typ)
        out = {}
        for part in str(raw).split(","):
            if part.strip():
                key, _, val = part.partition("=")
                out[_coerce(key.strip(), key_t, name)] = _coerce(val.strip(), val_t, name)
        return out
    return raw


def load_dataclass(cls: type[T], section: str | None = None, config: dict[str, Any] | None = None, **overrides: Any) -> T:
    """Build `cls` from defaults, the config file (`[section]` table) and `PREFLOOP_[SECTION_]FIELD` env vars."""
    if config is None:
        config = read_config_file()
    table = config.get(section, {}) if section else {k: v for k, v in config.items() if not isinstance(v, dict)}
    if not isinstance(table, dict):
        raise ConfigError(f"config file: [{section}] should be a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(table) - known
    if unknown:
        where = f"[{section}]" if section else "top level"
        raise ConfigError(f"config file {where}: unknown setting(s) {', '.join(sorted(unknown))}")
    prefix = ENV_PREFIX + (section.upper() + "_" if section else "")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.init:
            continue
        typ = hints[f.name]
        if f.name in table:
            values[f.name] = _coerce(table[f.name], typ, f.name)
        env = os.environ.get(prefix + f.name.upper())
        if env is not None and env != "":
            values[f.name] = _coerce(env, typ, prefix + f.name.upper())
    values.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**values)


def load_settings(**overrides: Any) -> Settings:
    return load_dataclass(Settings, None, **overrides)


__all__ = ["Settings", "TopicSpec", "load_settings", "load_dataclass", "read_config_file", "redact_url"]
