"""Background processes that `prefloop up` starts and `prefloop down` stops, tracked by PID file."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prefloop.errors import ServiceError
from prefloop.settings import Settings

# The processes this process started, by PID. Holding the Popen keeps `subprocess` from reaping a
# dead child behind our back (it polls forgotten Popens on every new start), so `exit_status`
# can still read why it ended.
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    run_dir: Path
    log_dir: Path

    @classmethod
    def of(cls, settings: Settings, name: str) -> "ManagedProcess":
        """The service `name` of the prefloop home `settings` names."""
        return cls(name, settings.run_dir, settings.log_dir)

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            # A new session, so the process outlives the CLI that started it and its group can be signalled whole.
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )
        _children[proc.pid] = proc
        self.pid_file.write_text(str(proc.pid))
        return proc.pid

    def note(self, line: str) -> None:
        """Append a line to the service's log (the watchdog's restart reasons go there)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM, then SIGKILL after `timeout_s`. Returns whether a process was running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        terminate(pid, timeout_s)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.rstrip().splitlines()[-lines:])


def exit_status(pid: int) -> int | None:
    """The exit status of a child this process started (negative: killed by that signal), reaping
    it; None while it runs or when it is not our child."""
    proc = _children.get(pid)
    if proc is None or proc.poll() is None:
        return None
    del _children[pid]
    return proc.returncode


def describe_exit(status: int | None) -> str:
    """'exited with code 70', 'was killed by SIGKILL', or why the status is unknown."""
    if status is None:
        return "exited (status unknown: not started by this watchdog)"
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with code {status}"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def terminate(pid: int, timeout_s: float = 20.0) -> None:
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not pid_alive(pid):
                return
            time.sleep(0.1)


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def ensure_port_free(port: int, what: str, setting: str) -> None:
    if port_open(port):
        raise ServiceError(
            f"port {port} for {what} is already in use by another process; stop it or set PREFLOOP_{setting.upper()}"
        )


def worker_ready_file(settings: Settings, pid: int) -> Path:
    """Written by a streams worker (pid `pid`) once it holds its partitions; `up` and the benches wait for it."""
    return settings.run_dir / f"worker-{pid}.ready"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def isolated_settings(home: Path, **overrides: object) -> Settings:
    """Settings in `home` with every service on a free loopback port: for tests and benchmarks, which
    must never touch the default home or ports (others may be using them)."""
    ports = {name: free_port() for name in ("kafka_port", "kafka_controller_port", "redis_port", "analytics_port",
                                            "collector_port", "serve_port", "web_port")}
    return Settings(home=home, **{**ports, **overrides})  # type: ignore[arg-type]


def wait_until(proc: ManagedProcess, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `ready` until it is true; fail with the log's last lines if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # Liveness first: a port answered by somebody else's process must not count as ours being ready.
        if proc.pid() is None:
            raise ServiceError(f"{what} exited during start-up; last lines of {proc.log_file}:\n{proc.log_tail()}")
        if ready():
            return
        time.sleep(0.2)
    raise ServiceError(f"{what} not ready after {timeout_s:.0f}s; last lines of {proc.log_file}:\n{proc.log_tail()}")


def ensure_debian_tool(command: str, package: str | None = None, quiet: bool = False) -> str:
    """The path of `command`, installing Debian's `package` (default: the command's name) with apt-get once
    when it is missing and we are root; ServiceError saying how to install it otherwise."""
    path = shutil.which(command)
    if path:
        return path
    package = package or command
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"{command} is not installed: run `apt-get install -y {package}` as root")
    if not quiet:
        print(f"{command} is missing: installing Debian's {package} with apt-get (once)…", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    if subprocess.run(install, capture_output=True, env=env).returncode != 0:  # a stale index: update, then retry
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        result = subprocess.run(install, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr).strip().splitlines()[-1:]
            raise ServiceError(f"could not install {package} with apt-get: {' '.join(tail)}")
    path = shutil.which(command)
    if path is None:
        raise ServiceError(f"apt-get installed {package} but {command} is not on PATH")
    return path
