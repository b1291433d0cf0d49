"""What a backend is asked to do and what it answers: the contract between the server and its backends.

A backend's `generate(job)` is an async iterator of text deltas (str) ending with one `Finish`, or
raising a `GenerationError` whose `status` is the HTTP answer and whose `kind` starts the Response's
`error` field ("timeout: …", "adapter: …"), so error rates can be grouped by kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator, Protocol

from prefloop.errors import PrefloopError


@dataclass(frozen=True)
class Target:
    """The model version that answers, and where its adapter is (None: the base model)."""

    version: str
    adapter_path: str | None = None


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0 is greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False


@dataclass
class GenerationJob:
    target: Target
    messages: list[dict[str, str]]  # {"role", "content"} in order
    params: SamplingParams
    stream: bool = False


@dataclass(frozen=True)
class Finish:
    reason: str  # "stop" (end of turn or a stop sequence) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)  # an exception compares and hashes by identity
class GenerationError(PrefloopError):
    """A request the backend could not answer. `kind` is a short word for the Response's error field."""

    kind: str
    message: str
    status: int = 500
    param: str | None = None
    retry_after_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    @property
    def recorded(self) -> str:
        """The Response's `error` value: kind first, e.g. 'timeout: no answer within 120s'."""
        return f"{self.kind}: {self.message}"


class Backend(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def ready(self) -> bool: ...

    def status(self) -> dict[str, object]: ...

    def generate(self, job: GenerationJob) -> AsyncIterator[str | Finish]: ...
