"""The watchdog `prefloop up` leaves running: it starts the local services and restarts any that dies.

`prefloop up` does not start services itself. It writes the services it wants to
`run/watchdog.want`, starts this process when none runs, and follows its progress in
`run/watchdog.json`. The watchdog starts the wanted services in dependency order with the
same `Service.start()` as before, so every service is its child and it can tell how a dead one
ended (exit code or signal).

Then, every `check_interval_s`, it checks that each service's process is alive. When one is
gone it writes why to the service's log and its own, waits (back-off: `restart_backoff_s`,
doubled for each restart in a row up to `restart_backoff_max_s`, back to the start once the
service stayed up `stable_s`) and starts it again. `prefloop status` shows each service's
restart count and how it last ended. In production the compose file's
`restart: unless-stopped` does the same job.

Every service `supervisor.build_services` declares is watched: a new service needs no code
here. `prefloop down` stops the watchdog first, so nothing restarts what it stops next.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, IO

from prefloop.errors import ServiceError
from prefloop.services.process import ManagedProcess, describe_exit, exit_status, terminate
from prefloop.setting_fields import check_fields, setting
from prefloop.settings import Settings, load_settings

log = logging.getLogger("prefloop.watchdog")

NAME = "watchdog"


@dataclass
class WatchdogSettings:
    """`[watchdog]` in prefloop.toml, `PREFLOOP_WATCHDOG_<FIELD>` in the environment."""

    SECTION: ClassVar[str] = "watchdog"

    check_interval_s: float = setting(0.5, help="How often the watchdog checks that each service's process is alive (seconds).", gt=0)
    restart_backoff_s: float = setting(
        1.0, help="Wait before restarting a service that died (seconds); doubled for each further restart in a row.", gt=0)
    restart_backoff_max_s: float = setting(60.0, help="Longest wait between two restarts of a service (seconds).", gt=0)
    stable_s: float = setting(
        60.0, help="A service that stays up this long (seconds) is stable again: its next restart waits restart_backoff_s.", gt=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def backoff_s(self, streak: int) -> float:
        """The wait before a restart that follows `streak` restarts in a row."""
        return min(self.restart_backoff_max_s, self.restart_backoff_s * 2 ** min(streak, 30))


# A service's record, as `prefloop status` and `prefloop up` read it:
# wanted -> starting -> running; running -> backoff (it died) -> starting -> running ...;
# failed: its start at `prefloop up` failed, retried only by the next `prefloop up`.
WANTED, STARTING, RUNNING, BACKOFF, FAILED = "wanted", "starting", "running", "backoff", "failed"


@dataclass
class ServiceRecord:
    state: str = WANTED
    pid: int | None = None
    restarts: int = 0  # restarts since `prefloop up` first started it
    streak: int = 0  # restarts in a row without staying up `stable_s`
    last_exit: str = ""  # how the last process ended ("exited with code 70", "was killed by SIGKILL")
    last_exit_at: float = 0.0  # wall-clock seconds
    next_start_at: float = 0.0  # when a service in back-off is started again
    up_since: float = 0.0
    up_in_s: float = 0.0  # how long its last start took
    started_generation: int = 0  # the `up` request that last started it
    error: str = ""  # why its start at `prefloop up` failed


@dataclass
class WatchState:
    pid: int | None = None
    generation: int = 0
    services: dict[str, ServiceRecord] = field(default_factory=dict)


def want_file(settings: Settings) -> Path:
    return settings.run_dir / f"{NAME}.want"


def state_file(settings: Settings) -> Path:
    return settings.run_dir / f"{NAME}.json"


def process(settings: Settings) -> ManagedProcess:
    return ManagedProcess.of(settings, NAME)


def _write_json(path: Path, data: Any) -> None:
    """Write atomically: the reader in another process never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def read_want(settings: Settings) -> tuple[int, list[str]]:
    try:
        data = json.loads(want_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        return 0, []
    return int(data["generation"]), list(data["services"])


def read_state(settings: Settings) -> WatchState:
    """The watchdog's last report (empty when it never ran since the last `down`)."""
    try:
        data = json.loads(state_file(settings).read_text())
    except (FileNotFoundError, ValueError):
        return WatchState()
    known = {f.name for f in dataclasses.fields(ServiceRecord)}
    services = {name: ServiceRecord(**{k: v for k, v in rec.items() if k in known}) for name, rec in data["services"].items()}
    return WatchState(data.get("pid"), int(data.get("generation", 0)), services)


# --- the watchdog process ---------------------------------------------------------------------------------
class Watchdog:
    def __init__(self, settings: Settings, ws: WatchdogSettings) -> None:
        from prefloop.services.supervisor import ALL_SERVICES, build_services

        self.settings = settings
        self.ws = ws
        self.order = ALL_SERVICES
        self.services = build_services(settings)
        # Counts survive a restart of the watchdog itself; its services are then adopted by PID
        # (a start it was in the middle of is checked again).
        self.state = read_state(settings)
        self.state.pid = os.getpid()
        self.state.generation = 0
        for record in self.state.services.values():
            if record.state == STARTING:
                record.state = WANTED

    def run(self) -> None:
        log.info("watchdog %d watching %s", os.getpid(), self.settings.home)
        while True:
            self.step()
            time.sleep(self.ws.check_interval_s)

    def step(self) -> None:
        generation, wanted = read_want(self.settings)
        if generation != self.state.generation:
            self.state.generation = generation
            for name in (n for n in wanted if n in self.services):  # a new `up`: failed starts are tried
                record = self.state.services.setdefault(name, ServiceRecord())
                if record.state == FAILED or (record.state == RUNNING and not self.services[name].healthy()):
                    record.state, record.error = WANTED, ""
        for name in (n for n in self.order if n in wanted and n in self.services):
            if not self.check(name):
                for later in (n for n in self.order if n in wanted and n in self.services):
                    record = self.state.services[later]
                    if record.state == WANTED:
                        record.state, record.error = FAILED, f"not started: {name} failed to start"
                break
        self.save()

    def save(self) -> None:
        _write_json(state_file(self.settings), {
            "pid": self.state.pid, "generation": self.state.generation,
            "services": {name: dataclasses.asdict(r) for name, r in self.state.services.items()},
        })

    def check(self, name: str) -> bool:
        """Bring one service to where it should be; False when its first start failed."""
        service, record = self.services[name], self.state.services[name]
        pid = service.proc.pid()
        now = time.time()
        if record.state == WANTED:
            if pid is not None and service.healthy():  # already up (a previous watchdog, or started by hand)
                record.state, record.pid, record.up_since = RUNNING, pid, now
                return True
            if pid is not None:  # running but not answering: start it afresh, as `up` always did
                service.stop()
            return self.start(name, first=True)
        if record.state == RUNNING:
            if pid is not None:
                record.pid = pid
                if record.streak and now - record.up_since >= self.ws.stable_s:
                    record.streak = 0
                return True
            how = describe_exit(exit_status(record.pid) if record.pid else None)
            record.state, record.last_exit, record.last_exit_at = BACKOFF, how, now
            delay = self.ws.backoff_s(record.streak)
            record.next_start_at = now + delay
            self.note(name, f"{name} (pid {record.pid}) {how}; restart {record.restarts + 1} in {delay:g}s")
            return True
        if record.state == BACKOFF and now >= record.next_start_at:
            if pid is not None:  # somebody started it meanwhile
                record.state, record.pid, record.up_since = RUNNING, pid, now
                return True
            record.restarts += 1
            record.streak += 1
            self.start(name, first=False)
        return True

    def start(self, name: str, first: bool) -> bool:
        service, record = self.services[name], self.state.services[name]
        record.state = STARTING
        self.save()  # `prefloop up` shows "starting …" while this blocks
        t0 = time.monotonic()
        try:
            service.start()
        except Exception as exc:  # noqa: BLE001 - any failed start is reported, never fatal to the watchdog
            message = str(exc) or type(exc).__name__
            if first:
                record.state, record.error = FAILED, message
                log.error("%s failed to start: %s", name, message)
                return False
            record.state = BACKOFF
            record.last_exit, record.last_exit_at = f"restart failed: {message.splitlines()[0]}", time.time()
            delay = self.ws.backoff_s(record.streak)
            record.next_start_at = time.time() + delay
            self.note(name, f"{name}: restart {record.restarts} failed ({message.splitlines()[0]}); next try in {delay:g}s")
            return True
        record.state, record.pid, record.error = RUNNING, service.proc.pid(), ""
        record.up_since, record.up_in_s = time.time(), time.monotonic() - t0
        record.started_generation = self.state.generation
        if not first:
            self.note(name, f"{name} restarted (pid {record.pid}) in {record.up_in_s:.1f}s")
        return True

    def note(self, name: str, line: str) -> None:
        log.warning("%s", line)
        self.services[name].proc.note(f"watchdog: {line}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    settings = load_settings()
    Watchdog(settings, settings.section(WatchdogSettings)).run()
    return 0


# --- what `prefloop up | down | status` call ----------------------------------------------------------------
def running_pid(settings: Settings) -> int | None:
    return process(settings).pid()


def request(settings: Settings, names: list[str], env: dict[str, str]) -> int:
    """Ask for `names` on top of what is wanted already; start the watchdog if none runs. Returns
    the request's generation, which the watchdog's state names once it has acted on it."""
    generation, wanted = read_want(settings)
    generation += 1
    _write_json(want_file(settings), {"generation": generation, "services": sorted(set(wanted) | set(names))})
    proc = process(settings)
    if proc.pid() is None:
        proc.start([sys.executable, "-m", "prefloop.services.watchdog"], env=env)
    return generation


def follow(settings: Settings, names: list[str], generation: int, out: IO[str]) -> list[str]:
    """Print each service's start as the watchdog reports it; return the names started now.
    Raises ServiceError with the watchdog's reason when one fails to start."""
    proc = process(settings)
    started, announced = [], set()
    for name in names:
        deadline = time.monotonic() + settings.start_timeout_s + 60
        while True:
            state = read_state(settings)
            record = state.services.get(name) if state.generation >= generation else None
            if record is not None:
                if record.state == STARTING and name not in announced:
                    announced.add(name)
                    print(f"starting {name}…", file=out, flush=True)
                if record.state == FAILED:
                    raise ServiceError(record.error)
                if record.state in (RUNNING, BACKOFF) and record.started_generation == generation:
                    if name not in announced:
                        print(f"starting {name}…", file=out, flush=True)
                    print(f"  {name} up in {record.up_in_s:.1f}s (pid {record.pid})", file=out, flush=True)
                    started.append(name)
                    break
                if record.state == RUNNING:
                    break  # it was up already
            if proc.pid() is None:
                raise ServiceError(f"the watchdog exited while starting {name}; last lines of {proc.log_file}:\n"
                                   f"{proc.log_tail()}")
            if time.monotonic() > deadline:
                raise ServiceError(f"the watchdog did not report {name} up within {settings.start_timeout_s + 60:.0f}s; "
                                   f"see {proc.log_file}")
            time.sleep(0.2)
    return started


def stop(settings: Settings) -> bool:
    """Stop the watchdog and forget what it wanted (the services keep running). True when one ran."""
    proc = process(settings)
    pid = proc.pid()
    if pid is not None:
        terminate(pid, timeout_s=10)
    for path in (proc.pid_file, want_file(settings), state_file(settings)):
        path.unlink(missing_ok=True)
    return pid is not None


if __name__ == "__main__":
    sys.exit(main())
