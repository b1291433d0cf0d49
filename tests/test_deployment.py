"""docker/compose.yaml runs every service `prefloop up` starts, each with a command the CLI accepts, and
the services bound beyond loopback get the credentials they refuse to start without."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from prefloop.cli import build_parser
from prefloop.services.supervisor import PythonService, build_services
from prefloop.settings import Settings

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[1] / "docker" / "compose.yaml").read_text())
# `prefloop up`'s infrastructure and its production counterpart in the compose file.
INFRASTRUCTURE = {"kafka": "kafka", "redis": "redis", "analytics": "clickhouse"}
# Services `prefloop up` runs as `python -m MODULE` whose CLI verb has the same name.
MODULE_VERBS = {"streams": ["worker"], "prefloop.collector": ["collector"]}


def _local_services() -> dict:
    return build_services(Settings(home=Path("/nonexistent")))


@pytest.mark.parametrize("name", list(_local_services()))
def test_every_local_service_has_a_compose_service_with_the_same_command(name: str):
    service = _local_services()[name]
    if name in INFRASTRUCTURE:
        assert INFRASTRUCTURE[name] in COMPOSE["services"]
        return
    assert name in COMPOSE["services"], f"docker/compose.yaml has no {name!r} service"
    assert isinstance(service, PythonService)
    local = service.args if service.module == "prefloop.cli" else MODULE_VERBS[service.module]
    assert COMPOSE["services"][name]["command"] == local


@pytest.mark.parametrize("name", [n for n, s in COMPOSE["services"].items() if s.get("image") == "prefloop:latest"])
def test_compose_commands_are_prefloop_verbs(name: str):
    build_parser().parse_args(COMPOSE["services"][name]["command"])  # exits 2 on an unknown verb or flag


@pytest.mark.parametrize("name, host, credentials", [
    ("collector", "PREFLOOP_COLLECTOR_HOST", "PREFLOOP_COLLECTOR_AUTH_KEYS"),
    ("gateway", "PREFLOOP_SERVE_HOST", "PREFLOOP_SERVE_AUTH_KEYS"),
    ("web", "PREFLOOP_WEB_HOST", "PREFLOOP_WEB_PASSWORD"),
])
def test_public_services_bind_every_address_and_take_their_credentials_from_the_environment(name, host, credentials):
    env = COMPOSE["services"][name]["environment"]
    assert env[host] == "0.0.0.0"
    assert env[credentials].startswith("${" + credentials)
