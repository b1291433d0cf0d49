"""Operators' commands to the controller: `prefloop models promote VERSION [--to F]` and `prefloop models rollback`.

A command is a JSON record pushed on a Redis list (`prefloop.keys.ROLLOUT_COMMANDS`). The lease
holder applies the head of the list with the controller's own logic, stores a one-line result in
the rollout record under the command's id and pops the command in the same fenced write, so a
command is applied once even across a crash. The CLI waits for that result; when no controller
holds the lease it takes the lease itself, applies the commands, and gives the lease back.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from dataclasses import dataclass
from typing import Any

from prefloop import keys
from schemas.records import now_ms

ERROR_PREFIX = "error: "


class CommandKind(str, enum.Enum):
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Command:
    kind: CommandKind
    version: str = ""
    to_fraction: float | None = None  # promote: start at the stage of this fraction (1.0: production now)
    reason: str = ""
    command_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:16])
    at_ms: int = dataclasses.field(default_factory=now_ms)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["kind"] = self.kind.value
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Command":
        data = json.loads(text)
        data["kind"] = CommandKind(data["kind"])
        return cls(**data)


def push(redis_client: Any, command: Command) -> None:
    redis_client.rpush(keys.ROLLOUT_COMMANDS, command.to_json())


def head(redis_client: Any) -> Command | None:
    raw = redis_client.lindex(keys.ROLLOUT_COMMANDS, 0)
    return Command.from_json(raw) if raw else None
