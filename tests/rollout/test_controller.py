"""The controller as a service (`prefloop rollout run`) over the real Kafka, Redis and chDB: a PROMOTE event
on models.promotions and live traffic lead, by themselves, to COMPLETE or ROLLBACK."""

from __future__ import annotations

import time

from evaluator.rollout.state import RolloutStatus
from prefloop import routing
from rollout_helpers import (
    GOOD, Profile, Traffic, finished, promotion_events, publish_promote, rollout_decisions, start_controller, state_of,
    wait_for,
)
from schemas.records import PromotionDecision
from trainer.registry import VersionStatus


def model_versions_status(store, version: str) -> str:
    return store.query(f"SELECT status FROM model_versions FINAL WHERE version = '{version}'").scalar()


def test_good_feedback_advances_through_every_stage_to_complete(rollout_settings, registry, controllers, store,
                                                                redis_client):
    start_controller(controllers, redis_client)
    promote = publish_promote(rollout_settings, "v1.1")
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": GOOD}) as traffic:
        state = wait_for(lambda: finished(redis_client, "v1.1"), 90, "the rollout to finish")
    assert traffic.error is None
    rollout = state.rollout
    assert rollout.status is RolloutStatus.COMPLETED, state.last_check
    assert rollout.origin == f"PROMOTE {promote.event_id}"

    events = rollout_decisions(rollout_settings, rollout.rollout_id)
    assert [(e.decision, e.traffic_fraction) for e in events] == [
        (PromotionDecision.ADVANCE, 0.05), (PromotionDecision.ADVANCE, 0.2), (PromotionDecision.ADVANCE, 0.5),
        (PromotionDecision.COMPLETE, 1.0)]
    assert all(e.candidate_version == "v1.1" and e.baseline_version == "v1.0" for e in events)
    for e in events[1:]:  # every decision made on metrics carries them, and says why
        assert e.metrics["stage_responses"] >= 50 and e.metrics["stage_feedback"] >= 25
        assert {"canary_error_rate", "production_error_rate", "canary_thumbs_up_rate", "thumbs_up_rate_bound",
                "error_rate_bound", "stage_elapsed_s"} <= set(e.metrics)
        assert "no rule fired" in e.reason
    # Each stage was held at least its duration.
    assert all(e.metrics["stage_elapsed_s"] >= 2.0 for e in events[1:])

    # Production changed everywhere: registry (old one retired), Redis routing table, model_versions.
    assert registry.production().version == "v1.1"
    assert registry.get("v1.0").status is VersionStatus.RETIRED
    assert routing.read_table(redis_client) == routing.RoutingTable(
        production="v1.1", canary="", canary_fraction=0.0, updated_ms=routing.read_table(redis_client).updated_ms)
    wait_for(lambda: model_versions_status(store, "v1.1") == "production", 20, "model_versions to show v1.1 production")
    assert model_versions_status(store, "v1.0") == "retired"
    rows = store.query("SELECT decision, traffic_fraction FROM promotions FINAL WHERE event_id LIKE "
                       f"'rollout-{rollout.rollout_id}-%' ORDER BY occurred_at").rows
    assert rows == [["ADVANCE", 0.05], ["ADVANCE", 0.2], ["ADVANCE", 0.5], ["COMPLETE", 1]]


def test_more_errors_roll_back_within_the_first_stage(rollout_settings, registry, controllers, store, redis_client):
    start_controller(controllers, redis_client)
    publish_promote(rollout_settings, "v1.1")
    bad = Profile(thumbs_up_rate=0.8, error_rate=0.4)
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": bad}):
        state = wait_for(lambda: finished(redis_client, "v1.1"), 60, "the rollout to finish")
    rollout = state.rollout
    assert rollout.status is RolloutStatus.ROLLED_BACK
    events = rollout_decisions(rollout_settings, rollout.rollout_id)
    assert [(e.decision, e.traffic_fraction) for e in events] == [
        (PromotionDecision.ADVANCE, 0.05), (PromotionDecision.ROLLBACK, 0.0)]
    rollback = events[-1]
    assert "error rate" in rollback.reason and "stage 1/3" in rollback.reason
    assert rollback.metrics["error_rate_bound"] > 0
    assert rollback.metrics["canary_error_rate"] > rollback.metrics["production_error_rate"]
    assert registry.get("v1.1").status is VersionStatus.ROLLED_BACK
    assert registry.production().version == "v1.0"
    table = routing.read_table(redis_client)
    assert (table.production, table.canary, table.canary_fraction) == ("v1.0", "", 0.0)
    wait_for(lambda: model_versions_status(store, "v1.1") == "rolled_back", 20, "model_versions to show rolled_back")


def test_more_thumbs_down_roll_back_and_the_waiting_promotion_replaces_it(rollout_settings, registry, controllers,
                                                                          store, redis_client):
    """A second PROMOTE while a rollout runs waits; when the first is rolled back, it starts."""
    start_controller(controllers, redis_client)
    publish_promote(rollout_settings, "v1.1")
    wait_for(lambda: (state_of(redis_client).running or None) and state_of(redis_client).running.candidate == "v1.1",
             30, "v1.1's rollout to start")
    publish_promote(rollout_settings, "v1.2")
    wait_for(lambda: [w.candidate for w in state_of(redis_client).waiting] == ["v1.2"], 30, "v1.2 to wait")
    disliked = Profile(thumbs_up_rate=0.2, error_rate=0.01)
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": disliked, "v1.2": GOOD}):
        first = wait_for(lambda: finished(redis_client, "v1.1") or state_of(redis_client).rollout.candidate == "v1.2",
                         60, "v1.1's rollout to finish")
        second = wait_for(lambda: finished(redis_client, "v1.2"), 90, "v1.2's rollout to finish")
    v11 = [d for d in second.decisions if d.candidate == "v1.1"]
    assert [d.decision for d in v11] == [PromotionDecision.ADVANCE, PromotionDecision.ROLLBACK]
    assert "thumbs-up rate" in v11[-1].reason and "stage 1/3" in v11[-1].reason
    assert registry.get("v1.1").status is VersionStatus.ROLLED_BACK
    assert second.rollout.status is RolloutStatus.COMPLETED
    assert second.rollout.baseline == "v1.0"
    assert registry.production().version == "v1.2"
    assert first  # (the first rollout was over before the second began)


def test_no_traffic_never_advances_and_rolls_back_after_max_stage_s(rollout_settings, registry, controllers,
                                                                    redis_client):
    start_controller(controllers, redis_client, max_stage_s=8)
    publish_promote(rollout_settings, "v1.1")
    wait_for(lambda: state_of(redis_client).last_check.get("outcome") == "Inconclusive", 30, "an inconclusive check")
    time.sleep(3)  # longer than the 2 s stage: without data it must still wait
    state = state_of(redis_client)
    assert state.running is not None and state.running.stage_index == 0
    assert "waiting for" in state.last_check["reason"] and "canary responses" in state.last_check["reason"]
    state = wait_for(lambda: finished(redis_client, "v1.1"), 30, "the rollback after max_stage_s")
    assert state.rollout.status is RolloutStatus.ROLLED_BACK
    events = rollout_decisions(rollout_settings, state.rollout.rollout_id)
    assert [e.decision for e in events] == [PromotionDecision.ADVANCE, PromotionDecision.ROLLBACK]
    assert "lacks data" in events[-1].reason and "max_stage_s" in events[-1].reason
    assert registry.get("v1.1").status is VersionStatus.ROLLED_BACK


def test_promote_of_a_version_not_approved_is_ignored(rollout_settings, registry, controllers, redis_client):
    start_controller(controllers, redis_client)
    registry.set_status("v1.1", VersionStatus.ROLLED_BACK, reason="earlier rollout")
    before = len(promotion_events(rollout_settings))
    publish_promote(rollout_settings, "v1.1")
    publish_promote(rollout_settings, "v1.2")  # a later, approved one is taken
    state = wait_for(lambda: state_of(redis_client).running, 30, "v1.2's rollout")
    assert state.candidate == "v1.2"
    assert [e.candidate_version for e in promotion_events(rollout_settings)[before:]
            if e.decision is not PromotionDecision.PROMOTE] == ["v1.2"]
    assert "ignored PROMOTE" in controllers.started[0].log() and "rolled_back, not approved" in controllers.started[0].log()

