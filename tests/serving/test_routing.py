"""Sticky, monotone canary routing; the SDK's choose_model and the gateway agree for every user id."""

from __future__ import annotations

import asyncio

import pytest
import requests

from prefloop import routing
from prefloop.routing import RoutingTable
from prefloop.sdk import FeedbackClient, SyncFeedbackClient
from prefloop.serving.routing_cache import RoutingCache
from streams_helpers import wait_for

USERS = [f"user-{i}" for i in range(10_000)]
STAGES = (0.05, 0.20, 0.50, 1.0)


def test_routing_is_sticky_and_monotone_over_10000_users():
    canary_sets = []
    for fraction in STAGES:
        table = RoutingTable(production="v1.0", canary="v1.1", canary_fraction=fraction)
        first = [table.version_for(u) for u in USERS]
        assert [table.version_for(u) for u in USERS] == first  # sticky: the same answer every time
        canary = {u for u, v in zip(USERS, first) if v == "v1.1"}
        assert abs(len(canary) / len(USERS) - fraction) < 0.015  # the fraction of users, within sampling noise
        canary_sets.append(canary)
    for smaller, larger in zip(canary_sets, canary_sets[1:]):
        assert smaller <= larger  # monotone: a canary user at 5% stays one at 20%, 50% and 100%
    assert canary_sets[-1] == set(USERS)


@pytest.fixture
def table_in_redis(routing_redis, gateway):
    """Write routing tables for a test; production v1.0 alone is restored afterwards."""
    def write(table: RoutingTable) -> None:
        routing.write_table(routing_redis, table)
        # The gateway re-reads every second: wait until it serves this table.
        wait_for(lambda: gateway.health()["routing"]["canary_fraction"] == table.canary_fraction
                 and gateway.health()["routing"]["canary"] == table.canary, 15, 0.2, what="the gateway to read the table")

    yield write
    routing.write_table(routing_redis, RoutingTable(production="v1.0"))
    wait_for(lambda: gateway.health()["routing"]["canary"] == "", 15, 0.2, what="the gateway to read the table")


def ask(gateway, user: str | None) -> str:
    body = {"model": "prefloop", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1}
    if user is not None:
        body["user"] = user
    answer = requests.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["model"]


def test_sdk_and_gateway_give_every_user_the_same_version(table_in_redis, gateway, serving_settings):
    async def sdk_and_gateway_routes(users: list[str]) -> tuple[list[str], list[str]]:
        # The gateway's own routing cache, reading the same Redis table as the running gateway.
        cache = RoutingCache(serving_settings.redis_dsn, refresh_s=60, timeout_s=1, fallback=lambda: None)
        await cache.start()
        async with FeedbackClient(serving_settings) as sdk:
            try:
                return [await sdk.choose_model(u) for u in users], [cache.route(u)[0] for u in users]
            finally:
                await cache.close()

    for fraction in STAGES:
        table_in_redis(RoutingTable(production="v1.0", canary="v1.1", canary_fraction=fraction))
        sdk, gateway_routes = asyncio.run(sdk_and_gateway_routes(USERS))
        assert sdk == gateway_routes == [RoutingTable("v1.0", "v1.1", fraction).version_for(u) for u in USERS]
        # And through the running gateway's HTTP API, for users on both sides of the split.
        sample = [u for u, v in zip(USERS, sdk) if v == "v1.1"][:4] + [u for u, v in zip(USERS, sdk) if v == "v1.0"][:4]
        by_sdk = dict(zip(USERS, sdk))
        for user in sample:
            assert ask(gateway, user) == by_sdk[user]
    with SyncFeedbackClient(serving_settings) as sync_sdk:
        assert [sync_sdk.choose_model(u) for u in USERS[:500]] == sdk[:500]


def test_requests_without_a_user_are_assigned_per_request(table_in_redis, gateway):
    table_in_redis(RoutingTable(production="v1.0", canary="v1.1", canary_fraction=0.5))
    versions = [ask(gateway, None) for _ in range(24)]
    assert set(versions) == {"v1.0", "v1.1"}  # all 24 alike would have probability 2^-23
    assert {ask(gateway, "user-17") for _ in range(5)} == {RoutingTable("v1.0", "v1.1", 0.5).version_for("user-17")}


def test_choose_model_without_any_table_says_why(tmp_path):
    from prefloop.sdk import RoutingUnavailableError
    from prefloop.services.process import free_port
    from prefloop.settings import Settings

    nobody = Settings(home=tmp_path, redis_port=free_port())
    with SyncFeedbackClient(nobody) as sdk:
        with pytest.raises(RoutingUnavailableError, match="Redis is unreachable"):
            sdk.choose_model("user-1")
