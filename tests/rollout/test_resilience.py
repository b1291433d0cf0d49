"""The controller survives its own deaths: SIGKILLed mid-stage and restarted it continues the same stage
with the time it had left, repeats no decision under a new id and skips no stage; a decision persisted
but not carried out is carried out by the next holder with the same event_id; two controllers never both
act."""

from __future__ import annotations

import asyncio
import random
import re
import time

from evaluator.rollout.controller import Controller, Record
from evaluator.rollout.service import KafkaPublisher
from evaluator.rollout.settings import RolloutSettings
from evaluator.rollout.state import RolloutState, RolloutStatus
from prefloop import keys, routing
from rollout_helpers import (
    GOOD, Traffic, finished, promotion_events, publish_promote, rollout_decisions, start_controller, state_of, wait_for,
)
from schemas import encode
from schemas.records import PromotionDecision, PromotionEvent

EXPECTED = [("00", PromotionDecision.ADVANCE, 0.05), ("01", PromotionDecision.ADVANCE, 0.2),
            ("02", PromotionDecision.ADVANCE, 0.5), ("03", PromotionDecision.COMPLETE, 1.0)]


def check_decision_sequence(settings, rollout_id: str) -> list[PromotionEvent]:
    """The rollout's events: each step once by id, in order, none skipped; a re-published one identical."""
    events = rollout_decisions(settings, rollout_id)
    by_id: dict[str, PromotionEvent] = {}
    for e in events:
        if e.event_id in by_id:
            assert e.to_avro() == by_id[e.event_id].to_avro(), f"{e.event_id} was published twice with different content"
        by_id[e.event_id] = e
    distinct = list(by_id.values())
    assert [(e.event_id.rsplit("-", 2)[1], e.decision, e.traffic_fraction) for e in distinct] == EXPECTED
    return events


def test_sigkilled_controller_continues_the_same_stage_without_repeating_or_skipping(
        rollout_settings, registry, controllers, store, redis_client):
    rng = random.Random(7)
    start_controller(controllers, redis_client)
    publish_promote(rollout_settings, "v1.1")
    kills = 0
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": GOOD}, max_s=150) as traffic:
        wait_for(lambda: state_of(redis_client).running, 30, "the rollout to start")
        while kills < 3 and finished(redis_client, "v1.1") is None:
            time.sleep(rng.uniform(0.3, 2.5))  # any point: mid-check, mid-decision, mid-stage
            controllers.started[-1].kill()
            kills += 1
            before = state_of(redis_client)
            controllers.start().wait_ready()
            if before.running is None:
                continue
            # The restarted controller holds the same stage, with the stage's original start time.
            wait_for(lambda: state_of(redis_client).last_check.get("at_ms", 0) > before.last_check.get("at_ms", 0)
                     or state_of(redis_client).rollout.steps > before.rollout.steps, 30, "a check by the new controller")
            after = state_of(redis_client).rollout
            if after.steps == before.rollout.steps:  # no decision since the kill: same stage, same clock
                assert (after.stage_index, after.stage_started_ms) == (before.rollout.stage_index,
                                                                       before.rollout.stage_started_ms)
            else:  # a decision since: exactly the next stage (or the end)
                assert after.stage_index <= before.rollout.stage_index + 1
        state = wait_for(lambda: finished(redis_client, "v1.1"), 90, "the rollout to finish")
    assert traffic.error is None
    assert kills == 3
    assert state.rollout.status is RolloutStatus.COMPLETED
    check_decision_sequence(rollout_settings, state.rollout.rollout_id)
    assert [d.event_id.rsplit("-", 2)[1] for d in state.decisions] == ["00", "01", "02", "03"]
    assert registry.production().version == "v1.1"


class CrashingPublisher:
    """The real Kafka publisher, with the process 'dying' once: before sending, or just after."""

    def __init__(self, inner: KafkaPublisher, after_send: bool) -> None:
        self.inner, self.after_send, self.crashed = inner, after_send, False

    async def publish(self, event: PromotionEvent) -> None:
        if not self.crashed and not self.after_send:
            self.crashed = True
            raise ConnectionError("the controller died before publishing")
        await self.inner.publish(event)
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("the controller died after publishing, before recording it")


async def _crash_then_recover(settings, registry, store, redis_client, after_send: bool) -> tuple[str, RolloutState]:
    from aiokafka import AIOKafkaProducer

    rollout_settings = RolloutSettings(stages="0.05:2s,0.2:2s,0.5:2s,1.0", lease_ttl_s=3, poll_s=0.2)
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        publisher = CrashingPublisher(KafkaPublisher(producer), after_send)
        first = Controller(rollout_settings, redis_client, registry, store, publisher, "first")
        assert first.lease.acquire()
        promote = PromotionEvent(candidate_version="v1.1", baseline_version="v1.0", decision=PromotionDecision.PROMOTE)
        try:
            await first.step([Record(0, 0, encode(promote))], checks=False)
            raise AssertionError("the first controller should have died")
        except ConnectionError:
            pass
        crashed = state_of(redis_client)
        assert crashed.pending is not None and crashed.decisions == []
        redis_client.delete(keys.ROLLOUT_LEASE)  # the dead holder's lease lapses
        second = Controller(rollout_settings, redis_client, registry, store, KafkaPublisher(producer), "second")
        assert second.lease.acquire()
        await second.step(checks=False)
        return crashed.pending.event_id, state_of(redis_client)
    finally:
        await producer.stop()


def test_a_decision_persisted_but_not_published_is_published_once_by_the_next_holder(
        rollout_settings, registry, store, redis_client):
    before = len(promotion_events(rollout_settings))
    event_id, state = asyncio.run(_crash_then_recover(rollout_settings, registry, store, redis_client, after_send=False))
    published = [e for e in promotion_events(rollout_settings)[before:] if e.decision is not PromotionDecision.PROMOTE]
    assert [e.event_id for e in published] == [event_id]
    assert state.pending is None and [d.event_id for d in state.decisions] == [event_id]
    table = routing.read_table(redis_client)
    assert (table.canary, table.canary_fraction) == ("v1.1", 0.05)


def test_a_decision_published_but_not_recorded_is_repeated_with_the_same_event_id(
        rollout_settings, registry, store, redis_client):
    before = len(promotion_events(rollout_settings))
    event_id, state = asyncio.run(_crash_then_recover(rollout_settings, registry, store, redis_client, after_send=True))
    published = [e for e in promotion_events(rollout_settings)[before:] if e.decision is not PromotionDecision.PROMOTE]
    assert [e.event_id for e in published] == [event_id, event_id]  # at least once, recognisable by its id
    assert published[0].to_avro() == published[1].to_avro()
    assert [d.event_id for d in state.decisions] == [event_id] and state.rollout.steps == 1
    rows = store.query(f"SELECT count() FROM promotions FINAL WHERE event_id = '{event_id}'").scalar()
    assert rows == 1


def owner_of(controller) -> str:
    match = re.search(r"watching models\.promotions as (\S+)", controller.log())
    assert match, controller.log()
    return match.group(1)


def test_two_controllers_never_both_act(rollout_settings, registry, controllers, store, redis_client):
    first = start_controller(controllers, redis_client)
    second = controllers.start()
    second.wait_ready()
    first_id, second_id = owner_of(first), owner_of(second)
    assert redis_client.get(keys.ROLLOUT_LEASE).decode() == first_id
    publish_promote(rollout_settings, "v1.1")
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": GOOD}, max_s=150):
        wait_for(lambda: (state_of(redis_client).running or None) and state_of(redis_client).running.stage_index >= 1,
                 60, "stage 2")
        assert "holding the lease" not in second.log()
        first.kill()
        killed_at = time.time() * 1000
        state = wait_for(lambda: finished(redis_client, "v1.1"), 90, "the rollout to finish")
    owners = [d.owner for d in state.decisions]
    assert owners[0] == first_id and owners[-1] == second_id
    switch = owners.index(second_id)
    assert set(owners[:switch]) == {first_id} and set(owners[switch:]) == {second_id}, owners
    assert all(d.at_ms >= killed_at for d in state.decisions[switch:])
    assert second.log().count("holding the lease") == 1
    check_decision_sequence(rollout_settings, state.rollout.rollout_id)
