"""Kafka topics, created, listed and deleted the one way every part of prefloop does it.

Each function takes the settings, or a bootstrap address whose security then comes from the settings
file and environment; the admin client's options come from `prefloop.kafka_client.kafka_options` (the
[kafka] security settings), so a change to how prefloop connects to Kafka reaches every topic operation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from prefloop.kafka_client import options_for, start_client
from prefloop.settings import Settings, TopicSpec

REPLICATION_FACTOR = 1  # the local broker is one node; an external cluster's defaults apply to nothing else here


Target = Settings | str  # the settings, or a bootstrap address


def admin_options(target: Target, **extra: Any) -> dict[str, Any]:
    """Options of every admin client prefloop opens."""
    return {**options_for(target), **extra}


@asynccontextmanager
async def admin_client(target: Target, timeout_s: float = 30.0) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**admin_options(target, request_timeout_ms=int(timeout_s * 1000)))
    await start_client(admin, target)  # KafkaConnectError saying why when it cannot
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(target: Target, topics: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create those of `topics` that do not exist yet, with their partition counts; return the names
    created now. A topic another client created meanwhile counts as existing; any other refusal raises."""
    async with admin_client(target, timeout_s) as admin:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t.name not in existing]
        if not missing:
            return []
        response = await admin.create_topics([NewTopic(t.name, t.partitions, REPLICATION_FACTOR) for t in missing],
                                             timeout_ms=int(timeout_s * 1000))
        # aiokafka returns the broker's per-topic error codes instead of raising them.
        created = []
        for name, code, *message in response.topic_errors:
            if code == 0:
                created.append(name)
            elif for_code(code) is not TopicAlreadyExistsError:
                raise for_code(code)(f"cannot create topic {name}: {message[0] if message and message[0] else code}")
        return created


async def delete_topics(target: Target, names: list[str], timeout_s: float = 30.0) -> None:
    async with admin_client(target, timeout_s) as admin:
        await admin.delete_topics(names)


async def list_topics(target: Target, timeout_s: float = 30.0) -> list[str]:
    async with admin_client(target, timeout_s) as admin:
        return list(await admin.list_topics())
