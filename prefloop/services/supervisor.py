"""`prefloop up | down | status`: start, stop and inspect the local services in dependency order."""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from prefloop.errors import ServiceError
from prefloop.services.kafka import KafkaService
from prefloop.services.process import ManagedProcess, ensure_port_free, pid_alive, port_open, wait_until
from prefloop.services.redis_server import RedisService
from prefloop.settings import Settings

ALL_SERVICES = ("kafka", "redis", "analytics", "worker", "collector", "trainer", "rollout", "web")


class Service(Protocol):
    name: str
    proc: ManagedProcess

    def start(self) -> None: ...

    def healthy(self) -> bool: ...

    def stop(self) -> bool: ...


def service_env(settings: Settings) -> dict[str, str]:
    """This process's environment plus PREFLOOP_* variables that reproduce `settings` in a child process."""
    env = dict(os.environ)
    for f in dataclasses.fields(settings):
        env[f"PREFLOOP_{f.name.upper()}"] = str(getattr(settings, f.name))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class PythonService:
    """A prefloop component run as `python -m MODULE`, with a readiness check."""

    # (port, setting name) the service binds, checked free before start; None for workers.
    port: tuple[int, str] | None = None

    def __init__(self, settings: Settings, name: str, module: str, args: list[str] | None = None) -> None:
        self.settings = settings
        self.name = name
        self.module = module
        self.args = args or []
        self.proc = ManagedProcess(name, settings.home / "run", settings.home / "logs")

    def start(self) -> None:
        if self.port:
            ensure_port_free(self.port[0], self.name, self.port[1])
        self.proc.start([sys.executable, "-m", self.module, *self.args], env=service_env(self.settings))
        wait_until(self.proc, self.healthy, self.settings.start_timeout_s, self.name)

    def healthy(self) -> bool:
        raise NotImplementedError

    def stop(self) -> bool:
        return self.proc.stop(timeout_s=30)


class AnalyticsService(PythonService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "analytics", "prefloop.analytics.gateway", ["--port", str(settings.analytics_port)])
        self.port = (settings.analytics_port, "analytics_port")

    def healthy(self) -> bool:
        from prefloop.analytics.store import GatewayStore

        return GatewayStore(self.settings.analytics_url).ping()


class CollectorService(PythonService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "collector", "prefloop.collector")
        self.port = (settings.collector_port, "collector_port")

    def healthy(self) -> bool:
        return port_open(self.settings.collector_port, self.settings.collector_host)


class WorkerService(PythonService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "worker", "streams")

    def healthy(self) -> bool:
        pid = self.proc.pid()
        return pid is not None and (self.settings.home / "run" / f"worker-{pid}.ready").exists()


class TrainerService(PythonService):
    """The training service: consumes training.requests and runs one DPO job at a time."""

    READY_LINE = "prefloop trainer: consuming"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "trainer", "prefloop.cli", ["trainer"])

    def healthy(self) -> bool:
        # Ready once this run (the text after the last start header) says it is consuming.
        try:
            text = self.proc.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return self.proc.pid() is not None and self.READY_LINE in text.rsplit("\n--- ", 1)[-1]


class RolloutService(PythonService):
    """The canary rollout controller: acts on PROMOTE events and live metrics (evaluator/rollout/)."""

    READY_LINE = "prefloop rollout: watching"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "rollout", "prefloop.cli", ["rollout", "run"])

    def healthy(self) -> bool:
        try:
            text = self.proc.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return self.proc.pid() is not None and self.READY_LINE in text.rsplit("\n--- ", 1)[-1]


class WebService(PythonService):
    """`prefloop web`: the arena, leaderboard and dashboard; healthy once it answers HTTP (the login page too)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "web", "prefloop.cli", ["web"])
        self.port = (settings.web_port, "web_port")

    def healthy(self) -> bool:
        import urllib.error
        import urllib.request

        host = self.settings.web_host
        if host in ("0.0.0.0", "::", ""):  # bound to every address: ask on loopback
            host = "127.0.0.1"
        try:
            with urllib.request.urlopen(f"http://{host}:{self.settings.web_port}/", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False


def build_services(settings: Settings) -> dict[str, Service]:
    services: dict[str, Service] = {"kafka": KafkaService(settings), "redis": RedisService(settings)}
    if settings.embedded_analytics:
        services["analytics"] = AnalyticsService(settings)
    services["worker"] = WorkerService(settings)
    services["collector"] = CollectorService(settings)
    services["trainer"] = TrainerService(settings)
    services["rollout"] = RolloutService(settings)
    services["web"] = WebService(settings)
    return services


def _select(settings: Settings, only: list[str] | None) -> list[Service]:
    services = build_services(settings)
    names = only or list(services)
    unknown = [n for n in names if n not in ALL_SERVICES]
    if unknown:
        raise ServiceError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(ALL_SERVICES)}")
    return [services[n] for n in ALL_SERVICES if n in names and n in services]


def up(settings: Settings, only: list[str] | None = None, out=sys.stdout) -> list[str]:
    """Start what is not running yet, in dependency order. Returns the names started now."""
    selected = _select(settings, only)
    started = []
    for service in selected:
        if service.proc.pid() is not None and service.healthy():
            continue
        if service.proc.pid() is not None:
            service.stop()
        t0 = time.monotonic()
        print(f"starting {service.name}…", file=out, flush=True)
        service.start()
        print(f"  {service.name} up in {time.monotonic() - t0:.1f}s (pid {service.proc.pid()})", file=out, flush=True)
        started.append(service.name)
    if not started:
        print(f"prefloop is already up ({', '.join(s.name for s in selected)}); `prefloop status` shows details", file=out)
    return started


def down(settings: Settings, purge: bool = False, out=sys.stdout) -> list[str]:
    """Stop every service `up` started (by PID), newest dependency last. Keeps data unless `purge`."""
    stopped = []
    for service in reversed(list(build_services(settings).values())):
        if service.stop():
            stopped.append(service.name)
            print(f"stopped {service.name}", file=out)
    # Workers started by hand (`prefloop worker`) leave readiness files; clear stale ones.
    for ready in (settings.home / "run").glob("worker-*.ready") if (settings.home / "run").exists() else []:
        pid = int(ready.stem.split("-", 1)[1])
        if not pid_alive(pid):
            ready.unlink(missing_ok=True)
    if not stopped:
        print("nothing was running", file=out)
    if purge and settings.home.exists():
        shutil.rmtree(settings.home)
        print(f"deleted {settings.home}", file=out)
    return stopped


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool
    detail: str = ""


@dataclass
class StatusReport:
    services: list[ServiceStatus]
    topic_offsets: dict[str, int] = field(default_factory=dict)
    table_rows: dict[str, int] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def status(settings: Settings) -> StatusReport:
    import asyncio

    services = build_services(settings)
    rows = []
    for name, service in services.items():
        pid = service.proc.pid()
        healthy = pid is not None and service.healthy()
        rows.append(ServiceStatus(name, pid, healthy, "" if pid else "stopped"))
    report = StatusReport(rows)
    by_name = {s.name: s for s in rows}
    if by_name["kafka"].healthy or settings.kafka_bootstrap:
        from prefloop.services.kafka import end_offsets

        try:
            report.topic_offsets = asyncio.run(end_offsets(settings.bootstrap_servers, [t.name for t in settings.topics()]))
        except Exception as exc:  # status must still print the rest
            report.problems.append(f"kafka: {exc}")
    if by_name.get("analytics", ServiceStatus("analytics", None, True)).healthy:
        report.table_rows = table_row_counts(settings, report.problems)
    try:
        from streams.status import trigger_progress

        if by_name["redis"].healthy or settings.redis_url:
            report.trigger = trigger_progress(settings)
    except ImportError:
        pass
    except Exception as exc:
        report.problems.append(f"trigger: {exc}")
    return report


def table_row_counts(settings: Settings, problems: list[str]) -> dict[str, int]:
    from prefloop.analytics.store import AnalyticsError, connect

    store = connect(settings)
    try:
        result = store.query(
            "SELECT name, total_rows FROM system.tables WHERE database = currentDatabase() "
            "AND engine NOT IN ('View', 'MaterializedView') ORDER BY name"
        )
        return {name: int(rows or 0) for name, rows in result.rows}
    except AnalyticsError as exc:
        problems.append(f"analytics: {exc}")
        return {}
    finally:
        store.close()
