"""The simulation loop: users arrive at a fixed rate, ask, read one answer (or two, for an A/B
choice) and give feedback in realistic proportions, until the duration or the request count is reached.

Answers come from a `Backend`:
- `GatewayBackend` (`--mode generate`): the serving gateway through the official OpenAI client, with
  the user's id, so the routing table decides who gets the canary; the gateway records each answer
  as a Response itself, and the completion id is its response_id.
- `TemplateBackend` (`--mode template`): canned answers; the simulator emits the Responses.
Actions always go through the SDK.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prefloop.simulator import preference
from prefloop.simulator.answers import template_answer
from prefloop.simulator.ground_truth import GroundTruth
from prefloop.simulator.questions import Question, question_bank
from schemas.records import CATEGORY_TAG

SOURCE_TAG = "simulator"


@dataclass(frozen=True)
class Answer:
    response_id: str
    text: str
    version: str
    error: str | None = None


@dataclass(frozen=True)
class FeedbackMix:
    """What a user does with a single answer (shares sum to at most 1; the rest do nothing), and the
    share of requests that are A/B choices between two answers."""

    thumbs: float = 0.45
    rating: float = 0.20
    edit: float = 0.10
    accept: float = 0.10
    ab_choice: float = 0.15

    def __post_init__(self) -> None:
        from prefloop.errors import ConfigError

        shares = (self.thumbs, self.rating, self.edit, self.accept, self.ab_choice)
        if min(shares) < 0 or self.thumbs + self.rating + self.edit + self.accept > 1 or self.ab_choice > 1:
            raise ConfigError(f"feedback shares should be >= 0, thumbs + rating + edit + accept <= 1 and ab_choice <= 1; got {self}")


@dataclass(frozen=True)
class SimulationConfig:
    users: int
    rate: float  # requests per second
    duration_s: float
    seed: int = 0
    max_requests: int | None = None
    concurrency: int = 8
    mix: FeedbackMix = field(default_factory=FeedbackMix)
    # Versions an A/B choice compares (pinned); None: two answers of the user's routed version.
    ab_versions: tuple[str, str] | None = None


class Backend(Protocol):
    emits_responses: bool

    async def answer(self, question: Question, user_id: str, pin: str | None) -> Answer: ...

    async def close(self) -> None: ...


class GatewayBackend:
    """The serving gateway (OpenAI-compatible) as the model: real generation, routed per user."""

    emits_responses = False

    def __init__(self, base_url: str, api_key: str = "none", max_tokens: int = 48, temperature: float = 0.8,
                 timeout_s: float = 120.0) -> None:
        from openai import AsyncOpenAI

        self.client = AsyncOpenAI(base_url=base_url.rstrip("/") + "/v1", api_key=api_key or "none", timeout=timeout_s,
                                  max_retries=2)
        self.max_tokens = max_tokens
        self.temperature = temperature

    async def answer(self, question: Question, user_id: str, pin: str | None) -> Answer:
        completion = await self.client.chat.completions.create(
            model=pin or "auto",
            messages=[{"role": "user", "content": question.text}],
            user=user_id,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            metadata={CATEGORY_TAG: question.category, "source": SOURCE_TAG},
        )
        return Answer(completion.id, completion.choices[0].message.content or "", completion.model)

    async def close(self) -> None:
        await self.client.close()


class TemplateBackend:
    """Canned answers; the version is the routing table's choice for the user (or `default_version`)."""

    emits_responses = True

    def __init__(self, rng: random.Random, version_for: Callable[[str], str]) -> None:
        self.rng = rng
        self.version_for = version_for
        self.count = 0

    async def answer(self, question: Question, user_id: str, pin: str | None) -> Answer:
        self.count += 1
        return Answer(f"sim-{self.rng.getrandbits(64):016x}", template_answer(question, self.rng), pin or self.version_for(user_id))

    async def close(self) -> None:
        return None


@dataclass
class SimulationReport:
    requests: int = 0
    answers: int = 0
    failed: int = 0
    actions: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    truth: GroundTruth = field(default_factory=GroundTruth)
    errors: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"requests": self.requests, "answers": self.answers, "failed": self.failed, "actions": dict(self.actions),
                "seconds": self.seconds, "errors": dict(self.errors), "ground_truth": self.truth.to_json()}


class Simulation:
    def __init__(self, config: SimulationConfig, backend: Backend, feedback, progress: Callable[[SimulationReport], None] | None = None,
                 truth: GroundTruth | None = None):
        self.config = config
        self.backend = backend
        self.feedback = feedback  # prefloop.sdk.FeedbackClient, started
        self.rng = random.Random(config.seed)
        self.bank = question_bank(seed=config.seed)
        self.user_ids = [f"sim-u{config.seed}-{i:05d}" for i in range(config.users)]
        # Each user's judgement noise is their own seeded stream: the same run judges the same way.
        self.user_rngs = {u: random.Random(f"{config.seed}:{u}") for u in self.user_ids}
        self.report = SimulationReport(truth=truth or GroundTruth())  # a caller may carry one truth across runs
        self.progress = progress

    async def run(self, stop: asyncio.Event | None = None) -> SimulationReport:
        """Send requests until the duration, the request count or `stop` (set by a caller that watches
        for something, e.g. the demo waiting for the trigger), then wait for those in flight."""
        cfg = self.config
        started = time.monotonic()
        deadline = started + cfg.duration_s
        limit = asyncio.Semaphore(cfg.concurrency)
        tasks: set[asyncio.Task] = set()
        index = 0
        last_progress = started
        while time.monotonic() < deadline and (cfg.max_requests is None or index < cfg.max_requests):
            if stop is not None and stop.is_set():
                break
            due = started + index / cfg.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                    break
            await limit.acquire()
            if stop is not None and stop.is_set():  # set while every slot was busy: send nothing more
                limit.release()
                break
            user = self.rng.choice(self.user_ids)
            question = self.rng.choice(self.bank)
            ab = self.rng.random() < cfg.mix.ab_choice
            task = asyncio.create_task(self._one(user, question, ab))
            task.add_done_callback(lambda t: (limit.release(), tasks.discard(t)))
            tasks.add(task)
            index += 1
            if self.progress and time.monotonic() - last_progress >= 5:
                last_progress = time.monotonic()
                self.report.seconds = last_progress - started
                self.progress(self.report)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.feedback.flush()
        self.report.seconds = time.monotonic() - started
        return self.report

    async def _one(self, user: str, question: Question, ab: bool) -> None:
        self.report.requests += 1
        try:
            if ab:
                pins = self.config.ab_versions or (None, None)
                first, second = pins if self.rng.random() < 0.5 else pins[::-1]
                answers = await asyncio.gather(self._ask(question, user, first), self._ask(question, user, second))
                await self._choose(user, answers[0], answers[1])
            else:
                await self._react(user, await self._ask(question, user, None))
        except Exception as exc:  # noqa: BLE001 - a failed request is counted, the run goes on
            self.report.failed += 1
            self.report.errors[f"{type(exc).__name__}: {str(exc)[:120]}"] += 1

    async def _ask(self, question: Question, user: str, pin: str | None) -> Answer:
        answer = await self.backend.answer(question, user, pin)
        self.report.answers += 1
        self.report.truth.served(answer.version, answer.text)
        if self.backend.emits_responses:
            await self.feedback.response(prompt=question.text, response=answer.text, model_version=answer.version,
                                         response_id=answer.response_id, user_id=user,
                                         tags={CATEGORY_TAG: question.category, "source": SOURCE_TAG})
        return answer

    async def _react(self, user: str, answer: Answer) -> None:
        rng = self.user_rngs[user]
        mix = self.config.mix
        draw = rng.random()
        if draw < mix.thumbs:
            up = preference.thumbs_up(answer.text, rng)
            self.report.truth.voted(answer.version, up)
            await self._act(user, answer, "THUMBS_UP" if up else "THUMBS_DOWN")
        elif draw < mix.thumbs + mix.rating:
            await self._act(user, answer, "RATING", rating=preference.rating(answer.text, rng))
        elif draw < mix.thumbs + mix.rating + mix.edit:
            await self._act(user, answer, "EDIT", edited_text=preference.edit_toward_preference(answer.text))
        elif draw < mix.thumbs + mix.rating + mix.edit + mix.accept:
            if preference.score(answer.text) > 0:  # users accept only answers they like
                await self._act(user, answer, "ACCEPT")

    async def _choose(self, user: str, a: Answer, b: Answer) -> None:
        rng = self.user_rngs[user]
        winner, loser = (a, b) if preference.prefers_first(a.text, b.text, rng) else (b, a)
        self.report.truth.chose(winner.version, loser.version)
        await self._act(user, winner, "CHOICE", rejected_response_id=loser.response_id)

    async def _act(self, user: str, answer: Answer, kind: str, **fields) -> None:
        await self.feedback.action(response_id=answer.response_id, kind=kind, user_id=user, **fields)
        self.report.actions[kind] += 1
