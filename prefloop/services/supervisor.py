"""`prefloop up | down | status`: start, stop and inspect the local services in dependency order.

The services are declared here (a class each, `ALL_SERVICES`, `build_services`); the watchdog
(prefloop/services/watchdog.py) starts them for `up` and restarts any that dies.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from prefloop.errors import ServiceError
from prefloop.services.kafka import KafkaService, ensure_jars
from prefloop.services.process import ManagedProcess, ensure_port_free, pid_alive, port_open, wait_until, worker_ready_file
from prefloop.services.redis_server import RedisService, ensure_redis_server
from prefloop.settings import Settings

ALL_SERVICES = ("kafka", "redis", "analytics", "worker", "collector", "trainer", "evaluator", "gateway", "rollout", "web")


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
        self.proc = ManagedProcess.of(settings, name)

    def start(self) -> None:
        if self.port:
            ensure_port_free(self.port[0], self.name, self.port[1])
        self.proc.start([sys.executable, "-m", self.module, *self.args], env=service_env(self.settings))
        wait_until(self.proc, self.healthy, self.settings.start_timeout_s, self.name)

    def healthy(self) -> bool:
        raise NotImplementedError

    def stop(self) -> bool:
        return self.proc.stop(timeout_s=30)

    @staticmethod
    def answers_http(host: str, port: int, path: str) -> bool:
        """Whether `path` answers 200 (a service bound to every address is asked on loopback)."""
        import urllib.error
        import urllib.request

        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as answer:
                return answer.status == 200
        except (OSError, urllib.error.URLError):
            return False


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
        super().__init__(settings, "worker", "prefloop.cli", ["worker"])

    def healthy(self) -> bool:
        pid = self.proc.pid()
        return pid is not None and worker_ready_file(self.settings, pid).exists()


class LogReadyService(PythonService):
    """A service that is ready once this run (the log text after the last start header) printed READY_LINE."""

    READY_LINE = ""

    def healthy(self) -> bool:
        try:
            text = self.proc.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return False
        return self.proc.pid() is not None and self.READY_LINE in text.rsplit("\n--- ", 1)[-1]


class TrainerService(LogReadyService):
    """The training service: consumes training.requests and runs one DPO job at a time."""

    READY_LINE = "prefloop trainer: consuming"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "trainer", "prefloop.cli", ["trainer"])


class EvaluatorService(LogReadyService):
    """The offline gate: consumes training.results, publishes PROMOTE/REJECT on models.promotions (evaluator/gate/)."""

    READY_LINE = "prefloop evaluator: consuming"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "evaluator", "prefloop.cli", ["evaluator"])


class RolloutService(LogReadyService):
    """The canary rollout controller: acts on PROMOTE events and live metrics (evaluator/rollout/)."""

    READY_LINE = "prefloop rollout: watching"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "rollout", "prefloop.cli", ["rollout", "run"])


class GatewayService(PythonService):
    """`prefloop serve`: healthy once it answers /health (while its model still loads, too: requests
    get 503 until it is ready, and /health says which)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "gateway", "prefloop.cli", ["serve"])
        self.port = (settings.serve_port, "serve_port")

    def healthy(self) -> bool:
        return self.answers_http(self.settings.serve_host, self.settings.serve_port, "/health")


class WebService(PythonService):
    """`prefloop web`: the arena, leaderboard and dashboard; healthy once it answers HTTP (the login page too)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, "web", "prefloop.cli", ["web"])
        self.port = (settings.web_port, "web_port")

    def healthy(self) -> bool:
        return self.answers_http(self.settings.web_host, self.settings.web_port, "/")


def build_services(settings: Settings) -> dict[str, Service]:
    services: dict[str, Service] = {"kafka": KafkaService(settings), "redis": RedisService(settings)}
    if settings.embedded_analytics:
        services["analytics"] = AnalyticsService(settings)
    services["worker"] = WorkerService(settings)
    services["collector"] = CollectorService(settings)
    services["trainer"] = TrainerService(settings)
    services["evaluator"] = EvaluatorService(settings)
    services["gateway"] = GatewayService(settings)
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
    """Have the watchdog start what is not running yet, in dependency order, and keep it running
    (prefloop/services/watchdog.py). Returns the names started now."""
    from prefloop.services import watchdog

    selected = _select(settings, only)
    names = [s.name for s in selected]
    state = watchdog.read_state(settings) if watchdog.running_pid(settings) else watchdog.WatchState()
    watched = all(state.services.get(n, watchdog.ServiceRecord()).state == watchdog.RUNNING for n in names)
    started = []
    if not (watched and all(s.proc.pid() is not None and s.healthy() for s in selected)):
        # One-time downloads and installs run here, where the user sees them, not in the watchdog's log.
        if "kafka" in names:
            ensure_jars(settings)
        if "redis" in names:
            ensure_redis_server()
        generation = watchdog.request(settings, names, service_env(settings))
        started = watchdog.follow(settings, names, generation, out)
    if not started:
        print(f"prefloop is already up ({', '.join(names)}); `prefloop status` shows details", file=out)
    return started


def down(settings: Settings, purge: bool = False, out=sys.stdout) -> list[str]:
    """Stop the watchdog, then every service `up` started (by PID), newest dependency last. Keeps data unless `purge`."""
    from prefloop.services import watchdog

    if watchdog.stop(settings):  # first: it would restart what is stopped next
        print("stopped the watchdog", file=out)
    stopped = []
    for service in reversed(list(build_services(settings).values())):
        if service.stop():
            stopped.append(service.name)
            print(f"stopped {service.name}", file=out)
    # Workers started by hand (`prefloop worker`) leave readiness files; clear stale ones.
    for ready in settings.run_dir.glob(worker_ready_file(settings, 0).name.replace("0", "*")):
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
    restarts: int = 0  # by the watchdog since `prefloop up`
    last_exit: str = ""  # how its last process ended, when the watchdog restarted it


@dataclass
class StatusReport:
    services: list[ServiceStatus]
    watchdog_pid: int | None = None  # None: services that die are not restarted
    topic_offsets: dict[str, int] = field(default_factory=dict)
    table_rows: dict[str, int] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# The retraining trigger's progress for `prefloop status` (streams/trigger_progress.py, wired by prefloop/cli.py).
TriggerProgress = Callable[[Settings], dict[str, Any]]


def status(settings: Settings, trigger_progress: TriggerProgress | None = None) -> StatusReport:
    import asyncio

    from prefloop.services import watchdog

    services = build_services(settings)
    watchdog_pid = watchdog.running_pid(settings)
    watched = watchdog.read_state(settings).services if watchdog_pid else {}
    rows = []
    for name, service in services.items():
        pid = service.proc.pid()
        healthy = pid is not None and service.healthy()
        record = watched.get(name, watchdog.ServiceRecord())
        detail = {watchdog.BACKOFF: "restarting", watchdog.STARTING: "starting"}.get(record.state, "" if pid else "stopped")
        rows.append(ServiceStatus(name, pid, healthy, detail, record.restarts, record.last_exit))
    report = StatusReport(rows, watchdog_pid)
    by_name = {s.name: s for s in rows}
    if by_name["kafka"].healthy or settings.kafka_bootstrap:
        from prefloop.services.kafka import end_offsets

        try:
            report.topic_offsets = asyncio.run(end_offsets(settings, [t.name for t in settings.topics()]))
        except Exception as exc:  # status must still print the rest
            report.problems.append(f"kafka: {exc}")
    if by_name.get("analytics", ServiceStatus("analytics", None, True)).healthy:
        report.table_rows = table_row_counts(settings, report.problems)
    if trigger_progress is not None and (by_name["redis"].healthy or settings.redis_url):
        try:
            report.trigger = trigger_progress(settings)
        except Exception as exc:  # status must still print the rest
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
