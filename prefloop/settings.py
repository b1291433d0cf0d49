"""One settings object for every prefloop process.

Precedence, lowest to highest: the dataclass defaults below, the config file
(`$PREFLOOP_CONFIG`, else `./prefloop.toml` when present), then environment
variables. Core settings read `PREFLOOP_<FIELD>` (e.g. `PREFLOOP_KAFKA_PORT`) and the
file's top level; a subsystem's section (streams, trainer, …) reads
`PREFLOOP_<SECTION>_<FIELD>` and the file's `[section]` table; each subsystem's settings class
names its section in `SECTION`. Every field is declared once with `setting(...)` (default, help,
bounds); `python -m prefloop.settings_doc` generates docs/settings.md from them.
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
from prefloop.setting_fields import check_fields, setting

T = TypeVar("T")

ENV_PREFIX = "PREFLOOP_"


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


PORT = {"ge": 1, "le": 65535}  # bounds of every TCP port setting


@dataclass(repr=False)
class Settings:
    home: Path = setting(Path(".prefloop"), help="Where every local service keeps its data, logs and PID files.")
    kafka_host: str = setting("127.0.0.1", help="Address of the local Kafka broker (KRaft, single node) `prefloop up` starts.")
    kafka_port: int = setting(19092, **PORT, help="Client port of the local Kafka broker.")
    kafka_controller_port: int = setting(19093, **PORT, help="KRaft controller port of the local Kafka broker.")
    kafka_heap: str = setting("768m", help="JVM heap of the local broker; bounded so the broker fits beside the trainer.")
    kafka_version: str = setting("4.1.1", help="Apache Kafka release whose jars `prefloop up` fetches from Maven Central.")
    kafka_bootstrap: str = setting("", help="Bootstrap servers of an external cluster; empty means the local broker.")
    redis_port: int = setting(16379, **PORT, help="Port of the local redis-server (Debian's) `prefloop up` starts.")
    redis_url: str = setting("", help="URL of an external Redis (`redis://:PASSWORD@host:6379/0`, or `rediss://…` for TLS); "
                                      "empty means the local redis-server.")
    redis_password: str = setting("", secret=True, help="Password of the local redis-server (its requirepass) and of every "
                                                        "client of it; never printed.")
    clickhouse_url: str = setting(
        "", help="Analytics store: empty means embedded chDB under `home`, owned by the analytics service and reached "
                 "through it; `http://user:pass@host:8123/db` means a ClickHouse server.")
    analytics_port: int = setting(18123, **PORT, help="Loopback port of the analytics service that owns the embedded chDB store.")
    collector_host: str = setting("127.0.0.1", help="Address of the HTTP collector for non-Python apps.")
    collector_port: int = setting(18080, **PORT, help="Port of the HTTP collector.")
    collector_max_body_bytes: int = setting(1_048_576, ge=1024, help="Largest collector request body; a larger one is answered 413.")
    collector_max_events: int = setting(5_000, gt=0, help="Most events one collector request may carry (a 1 MiB body of "
                                                          "tiny bad items would otherwise mean 500k checks); more is answered 413.")
    serve_host: str = setting(
        "127.0.0.1", help="Address of the OpenAI-compatible gateway (`prefloop serve`; its own knobs are the [serve] "
                          "section). Loopback by default: another address needs API keys ([serve_auth], prefloop/auth/).")
    serve_port: int = setting(18000, **PORT, help="Port of the OpenAI-compatible gateway.")
    web_host: str = setting(
        "127.0.0.1", help="Address of the web app (`prefloop web`: arena, leaderboard, dashboard; its own knobs are the "
                          "[web] section). Loopback by default: another address needs [web] username and password.")
    web_port: int = setting(17860, **PORT, help="Port of the web app.")
    responses_partitions: int = setting(8, gt=0, help="Partitions of feedback.responses; every contract topic is created explicitly at start-up.")
    actions_partitions: int = setting(8, gt=0, help="Partitions of feedback.actions.")
    pairs_partitions: int = setting(8, gt=0, help="Partitions of feedback.pairs.")
    dlq_partitions: int = setting(2, gt=0, help="Partitions of feedback.dlq.")
    control_partitions: int = setting(1, gt=0, help="Partitions of training.requests, training.results and models.promotions.")
    start_timeout_s: float = setting(60.0, gt=0, help="How long `up` waits for each service to become healthy before reporting its log.")
    cache_dir: Path = setting(Path("~/.cache/prefloop"), help="Where fetched Kafka jars and built tiny models are cached; shared across homes.")

    def __post_init__(self) -> None:
        check_fields(self)
        self.home = Path(self.home).expanduser().resolve()
        self.cache_dir = Path(self.cache_dir).expanduser().resolve()

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
            if f.metadata.get("secret"):
                value = "(hidden)" if value else ""
            elif isinstance(value, str) and "://" in value:
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def embedded_analytics(self) -> bool:
        return not self.clickhouse_url

    @property
    def run_dir(self) -> Path:
        """PID files, the watchdog's state and the workers' readiness files."""
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

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

    def section(self, cls: type[T], name: str | None = None) -> T:
        """Load a subsystem's settings dataclass from the same file and environment: its `[SECTION]`
        table (`cls.SECTION` unless `name` is given) and `PREFLOOP_<SECTION>_<FIELD>` variables."""
        return load_dataclass(cls, section=name or cls.SECTION, config=self._config)  # type: ignore[attr-defined]

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
