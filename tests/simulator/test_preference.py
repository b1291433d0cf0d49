"""The simulated users' hidden preference: learnable (polite openers, short answers), noisy, seeded."""

from __future__ import annotations

import random

from prefloop.simulator import preference
from prefloop.simulator.questions import CATEGORIES, question_bank

POLITE_SHORT = "Sure! The capital of France is Paris."
PLAIN_SHORT = "The capital of France is Paris."
POLITE_LONG = "Sure! " + " ".join(["Paris is the capital and it has a long history worth telling."] * 3)


def test_a_text_that_follows_the_preference_is_preferred_more_often():
    rng = random.Random(1)
    wins = sum(preference.prefers_first(POLITE_SHORT, PLAIN_SHORT, rng) for _ in range(2000))
    assert wins / 2000 > 0.9
    wins_short = sum(preference.prefers_first(PLAIN_SHORT, POLITE_LONG, rng) for _ in range(2000))
    assert 0.5 < wins_short / 2000  # a long answer loses even with the opener
    ups = {text: sum(preference.thumbs_up(text, rng) for _ in range(4000)) / 4000 for text in (POLITE_SHORT, PLAIN_SHORT)}
    assert ups[POLITE_SHORT] - ups[PLAIN_SHORT] > 0.25
    ratings = {text: sum(preference.rating(text, rng) for _ in range(2000)) / 2000 for text in (POLITE_SHORT, PLAIN_SHORT)}
    assert ratings[POLITE_SHORT] > ratings[PLAIN_SHORT] + 1.0


def test_judgements_are_a_function_of_the_text_and_the_seed():
    a = [preference.prefers_first(POLITE_SHORT, PLAIN_SHORT, random.Random(7)) for _ in range(5)]
    assert len(set(a)) == 1
    first = random.Random(3)
    second = random.Random(3)
    assert [preference.rating(PLAIN_SHORT, first) for _ in range(50)] == [preference.rating(PLAIN_SHORT, second) for _ in range(50)]


def test_edits_move_answers_toward_the_preference():
    for text in (PLAIN_SHORT, POLITE_LONG, "", "ok", "Of course you can. Just click save. Then reload."):
        edited = preference.edit_toward_preference(text)
        assert preference.opens_politely(edited) and preference.word_count(edited) <= 19
        assert preference.score(edited) >= preference.score(text)
    assert preference.edit_toward_preference("the answer is 42, probably") == "Sure! The answer is 42, probably."


def test_question_bank_covers_every_category_with_distinct_questions():
    bank = question_bank(size_per_category=10, seed=0)
    assert {q.category for q in bank} == set(CATEGORIES)
    assert len({q.text for q in bank}) == len(bank) == 50
    assert question_bank(size_per_category=10, seed=0) == bank


def test_a_stop_while_every_slot_is_busy_sends_no_further_request():
    """The demo pauses traffic when the trigger fires: with all `concurrency` requests waiting on the model,
    a stop must not let one more through once a slot frees (it would cost a generation round)."""
    import asyncio

    from prefloop.simulator.traffic import Answer, FeedbackMix, Simulation, SimulationConfig

    class SlowModel:
        emits_responses = False

        def __init__(self) -> None:
            self.calls = 0
            self.release = asyncio.Event()

        async def answer(self, question, user_id, pin):
            self.calls += 1
            await self.release.wait()
            return Answer(f"r{self.calls}", "Sure, here it is.", "v1.0")

        async def close(self) -> None:
            return None

    class Actions:
        def __init__(self) -> None:
            self.sent: list[dict] = []

        async def action(self, **fields) -> None:
            self.sent.append(fields)

        async def flush(self) -> None:
            return None

    async def scenario() -> tuple[int, int]:
        model = SlowModel()
        config = SimulationConfig(users=3, rate=1000.0, duration_s=30.0, concurrency=2, mix=FeedbackMix(ab_choice=0.0))
        simulation = Simulation(config, model, Actions())
        stop = asyncio.Event()
        run = asyncio.create_task(simulation.run(stop))
        while model.calls < 2:  # both slots taken
            await asyncio.sleep(0.01)
        stop.set()
        model.release.set()
        report = await asyncio.wait_for(run, 10)
        return model.calls, report.requests

    calls, requests = asyncio.run(scenario())
    assert (calls, requests) == (2, 2)
