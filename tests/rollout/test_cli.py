"""The operators' verbs through the `prefloop` CLI: `models promote | rollback` (now applied by the
controller's logic, by the service or by the CLI itself when none runs), `rollout pause | resume | status`,
and one-line errors for bad input."""

from __future__ import annotations

import json
import time

from evaluator.rollout.state import RolloutStatus
from prefloop import keys, routing
from rollout_helpers import (
    GOOD, Traffic, cli, promotion_events, start_controller, state_of, wait_for,
)
from schemas.records import PromotionDecision
from trainer.registry import VersionStatus


def new_decisions(settings, before: int) -> list[tuple[PromotionDecision, str, float]]:
    return [(e.decision, e.candidate_version, e.traffic_fraction) for e in promotion_events(settings)[before:]]


def test_promote_and_rollback_without_a_running_controller(rollout_settings, registry, rollout_env, redis_client):
    """With no service holding the lease, the CLI applies its command with the controller's logic itself."""
    registry.set_status("v1.1", VersionStatus.ROLLED_BACK, reason="an earlier canary")  # a person may still ask
    before = len(promotion_events(rollout_settings))

    started = cli(rollout_env, "models", "promote", "v1.1", "--reason", "retry after the fix")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "v1.1 rollout started at stage 1/3 (5%)"
    assert "no rollout controller is running" in started.stderr
    state = state_of(redis_client)
    assert state.running.candidate == "v1.1" and state.running.origin == "manual: retry after the fix"
    assert registry.get("v1.1").status is VersionStatus.CANARY
    table = routing.read_table(redis_client)
    assert (table.production, table.canary, table.canary_fraction) == ("v1.0", "v1.1", 0.05)
    assert redis_client.get(keys.ROLLOUT_LEASE) is None  # given back

    done = cli(rollout_env, "models", "promote", "v1.1", "--to", "1.0")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v1.1 is production now"
    assert registry.production().version == "v1.1" and registry.get("v1.0").status is VersionStatus.RETIRED
    assert routing.read_table(redis_client).production == "v1.1"

    back = cli(rollout_env, "models", "rollback", "--reason", "support tickets")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == "rolled back v1.1; v1.0 is production again"
    assert registry.production().version == "v1.0" and registry.get("v1.1").status is VersionStatus.ROLLED_BACK
    assert routing.read_table(redis_client).production == "v1.0"
    assert new_decisions(rollout_settings, before) == [
        (PromotionDecision.ADVANCE, "v1.1", 0.05), (PromotionDecision.COMPLETE, "v1.1", 1.0),
        (PromotionDecision.ROLLBACK, "v1.1", 0.0)]
    last = promotion_events(rollout_settings)[-1]
    assert last.baseline_version == "v1.0" and last.reason == "manual rollback: support tickets"


def test_promote_straight_to_production_skips_the_canary(rollout_settings, registry, rollout_env, redis_client):
    result = cli(rollout_env, "models", "promote", "v1.2", "--to", "1.0")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "v1.2 is production now"
    state = state_of(redis_client)
    assert state.rollout.status is RolloutStatus.COMPLETED
    assert [d.decision for d in state.decisions] == [PromotionDecision.COMPLETE]
    assert registry.production().version == "v1.2"


def test_bad_commands_fail_with_one_line(rollout_settings, registry, rollout_env, redis_client):
    cases = [
        (("models", "promote", "v9.9"), "unknown model version 'v9.9'"),
        (("models", "promote", "v1.1", "--to", "0.3"), "--to 0.3 is not a stage of the plan (0.05, 0.2, 0.5, 1)"),
        (("models", "promote", "v1.1", "--to", "2"), "should be in (0, 1], got 2"),
        (("models", "promote", "v1.0"), "v1.0 is already production"),
        (("models", "rollback"), "nothing to roll back"),
    ]
    for args, message in cases:
        result = cli(rollout_env, *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, (args, result.stderr)
    assert registry.production().version == "v1.0"
    assert redis_client.llen(keys.ROLLOUT_COMMANDS) == 0  # nothing left queued


def test_pause_holds_the_stage_resume_continues_and_status_shows_both_arms(
        rollout_settings, registry, rollout_env, controllers, store, redis_client):
    start_controller(controllers, redis_client, stages="0.05:2s,0.2:60s,0.5:2s,1.0", max_stage_s=90)  # stage 2 lasts
    assert cli(rollout_env, "rollout", "pause", "--reason", "holiday").returncode == 0
    started = cli(rollout_env, "models", "promote", "v1.1")  # a person's command still applies while paused
    assert started.returncode == 0 and "no rollout controller" not in started.stderr, started.stderr
    with Traffic(store, redis_client, {"v1.0": GOOD, "v1.1": GOOD}):
        wait_for(lambda: "paused" in state_of(redis_client).last_check.get("reason", ""), 30, "a paused check")
        time.sleep(4)  # the 2 s stage and its 50 responses are long reached: paused, it must not advance
        assert state_of(redis_client).running.stage_index == 0

        status = cli(rollout_env, "rollout", "status")
        assert status.returncode == 0, status.stderr
        text = status.stdout
        assert "v1.1 against v1.0 - running, stage 1/3 (5%)" in text and "stage time left: 0s" in text
        assert "traffic: production v1.0, canary v1.1 at 5%" in text
        assert "PAUSED since" in text and "holiday" in text
        assert "error rate" in text and "thumbs-up rate" in text and "[Successful" in text
        report = json.loads(cli(rollout_env, "rollout", "status", "--json").stdout)
        assert report["rollout"]["candidate"] == "v1.1" and report["paused"]["reason"] == "holiday"
        assert report["metrics"]["canary_responses"] > 0 and report["metrics"]["production_responses"] > 0
        for arm in ("canary", "production"):
            low, high = report["intervals"]["thumbs_up_rate"][arm]
            assert low < report["metrics"][f"{arm}_thumbs_up_rate"] < high
        assert {r["rule"] for r in report["rules"]} == {"error_rate", "crash_rate", "p99_latency", "thumbs_up_rate",
                                                        "mean_rating", "choice_win_rate"}

        assert cli(rollout_env, "rollout", "resume").stdout.strip() == "rollout resumed"
        wait_for(lambda: (state_of(redis_client).running or None) and state_of(redis_client).running.stage_index == 1,
                 30, "the next stage after resume")
        back = cli(rollout_env, "models", "rollback")
    assert back.returncode == 0, back.stderr
    assert back.stdout.strip() == "rolled back the canary v1.1; v1.0 stays production"
    state = state_of(redis_client)
    assert state.rollout.status is RolloutStatus.ROLLED_BACK and state.decisions[-1].reason == "manual rollback"
    assert registry.get("v1.1").status is VersionStatus.ROLLED_BACK
    assert routing.read_table(redis_client).canary == ""


def test_commands_while_a_rollout_runs_jump_queue_and_replace(rollout_settings, registry, rollout_env, controllers,
                                                             redis_client):
    start_controller(controllers, redis_client, stages="0.05:60s,0.2:60s,0.5:60s,1.0", max_stage_s=90)
    assert cli(rollout_env, "models", "promote", "v1.1").stdout.strip() == "v1.1 rollout started at stage 1/3 (5%)"

    queued = cli(rollout_env, "models", "promote", "v1.2")
    assert queued.stdout.strip() == "v1.2 queued behind v1.1's rollout (stage 1/3)", queued.stderr
    again = cli(rollout_env, "models", "promote", "v1.1")
    assert again.returncode == 2 and "v1.1 is already rolling out at stage 1/3 (5%); --to a later stage" in again.stderr
    jumped = cli(rollout_env, "models", "promote", "v1.1", "--to", "0.5")
    assert jumped.stdout.strip() == "v1.1 moved to stage 3/3 (50%)", jumped.stderr
    assert routing.read_table(redis_client).canary_fraction == 0.5

    back = cli(rollout_env, "models", "rollback")
    assert back.stdout.strip() == "rolled back the canary v1.1; v1.0 stays production", back.stderr
    state = wait_for(lambda: (state_of(redis_client).running or None) and state_of(redis_client), 30,
                     "the waiting v1.2 to replace it")
    assert state.running.candidate == "v1.2" and state.running.origin == "manual promotion"
    table = routing.read_table(redis_client)
    assert (table.production, table.canary, table.canary_fraction) == ("v1.0", "v1.2", 0.05)
    assert [(d.decision, d.candidate, d.traffic_fraction) for d in state.decisions] == [
        (PromotionDecision.ADVANCE, "v1.1", 0.05), (PromotionDecision.ADVANCE, "v1.1", 0.5),
        (PromotionDecision.ROLLBACK, "v1.1", 0.0), (PromotionDecision.ADVANCE, "v1.2", 0.05)]
