"""Debian's redis-server on loopback, data under the prefloop home (dedup keys, trigger state and lock, routing)."""

from __future__ import annotations

from prefloop.services.process import ManagedProcess, ensure_debian_tool, ensure_port_free, wait_until
from prefloop.settings import Settings


def ensure_redis_server(quiet: bool = False) -> str:
    """Path of redis-server; installs Debian's package with apt-get when missing and we are root."""
    return ensure_debian_tool("redis-server", quiet=quiet)


def ping(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _conf_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


class RedisService:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dir = settings.home / "redis"
        self.proc = ManagedProcess.of(settings, "redis")

    def start(self) -> None:
        binary = ensure_redis_server()
        ensure_port_free(self.settings.redis_port, "Redis", "redis_port")
        self.dir.mkdir(parents=True, exist_ok=True)
        # The password goes in a file only prefloop's user reads, not on the command line (`ps`, the service log).
        conf = self.dir / "redis.conf"
        conf.write_text(f'requirepass "{_conf_quote(self.settings.redis_password)}"\n' if self.settings.redis_password else "")
        conf.chmod(0o600)
        # Append-only file with fsync every second: dedup keys and the trigger state survive a restart.
        self.proc.start([
            binary, str(conf), "--bind", "127.0.0.1", "--port", str(self.settings.redis_port), "--dir", str(self.dir),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
            "--protected-mode", "yes", "--maxmemory-policy", "noeviction",
        ])
        wait_until(self.proc, self.healthy, self.settings.start_timeout_s, "Redis")

    def healthy(self) -> bool:
        return ping(self.settings.redis_dsn)

    def stop(self) -> bool:
        return self.proc.stop()
