"""Kafka topics, created, listed and deleted the one way every part of prefloop does it.

`admin_options` is the one place the admin client's options come from, so a change to how prefloop
connects to Kafka (security settings, timeouts) reaches every topic operation at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from prefloop.settings import TopicSpec

REPLICATION_FACTOR = 1  # the local broker is one node; an external cluster's defaults apply to nothing else here


def admin_options(bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
    """Options of every admin client prefloop opens."""
    return {"bootstrap_servers": bootstrap_servers, **extra}


@asynccontextmanager
async def admin_client(bootstrap_servers: str, timeout_s: float = 30.0) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**admin_options(bootstrap_servers, request_timeout_ms=int(timeout_s * 1000)))
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def create_topics(bootstrap_servers: str, topics: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create those of `topics` that do not exist yet, with their partition counts; return the names
    created now. A topic another client created meanwhile counts as existing; any other refusal raises."""
    async with admin_client(bootstrap_servers, timeout_s) as admin:
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


async def delete_topics(bootstrap_servers: str, names: list[str], timeout_s: float = 30.0) -> None:
    async with admin_client(bootstrap_servers, timeout_s) as admin:
        await admin.delete_topics(names)


async def list_topics(bootstrap_servers: str, timeout_s: float = 30.0) -> list[str]:
    async with admin_client(bootstrap_servers, timeout_s) as admin:
        return list(await admin.list_topics())
