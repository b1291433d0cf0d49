"""`DemoSettings` (`[demo]`, `PREFLOOP_DEMO_<FIELD>`): how long each step of `prefloop demo` may take and
how much traffic it sends, and `service_overlay`: the settings the demo gives the services it starts
(trigger thresholds sized for a demo, canary stages of seconds, a trainer that learns the simulated
users' habit in one micro-batch). A `PREFLOOP_*` variable set by the user wins over the overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prefloop.setting_fields import check_fields, setting


@dataclass
class DemoSettings:
    SECTION: ClassVar[str] = "demo"

    users: int = setting(40, ge=1, help="Simulated users.")
    rate: float = setting(2.0, gt=0, help="Simulated requests per second while traffic flows.")
    concurrency: int = setting(8, ge=1, help="Simulated requests in flight at most (the gateway batches them).")
    max_tokens: int = setting(32, ge=1, help="Tokens per generated answer: short answers keep CPU generation quick.")
    seed: int = setting(0, help="Seed of the simulated users, questions and judgements.")
    edit_share: float = setting(0.5, ge=0, le=0.85, help="Share of answers a simulated user edits toward their preference "
                                "(EDIT pairs: before the first update the only clean signal, since the base model's own answers "
                                "never open politely and differ little in length; the simulator's own default is 0.1). "
                                "Thumbs take 0.85 minus this share, ratings 0.1, silent accepts 0.05.")
    choice_share: float = setting(0.1, ge=0, le=1, help="Share of requests that are A/B choices between two answers (between two "
                                  "answers of the base model they are close to coin flips: few, so the gate's held-out set stays clear).")
    trigger_pairs: int = setting(100, ge=2, help="New pairs that fire the retraining trigger.")
    heldout_fraction: float = setting(0.3, gt=0, lt=1, help="Share of the pairs the trainer holds out for the gate.")
    gate_min_pairs: int = setting(15, ge=1, help="Fewest held-out pairs the gate decides on.")
    stages: str = setting("0.25:20s,0.5:20s,1.0", help="The canary plan of the demo's rollout (fraction:least time).")
    stage_min_events: int = setting(12, ge=0, help="Fewest canary responses each canary stage needs.")
    stage_min_feedback: int = setting(6, ge=0, help="Fewest judgements of canary responses each canary stage needs.")
    compare_s: float = setting(60.0, gt=0, help="Seconds of A/B traffic between the old and the new version after the rollout.")
    collect_timeout_s: float = setting(900.0, gt=0, help="Longest wait for the trigger to fire.")
    train_timeout_s: float = setting(1800.0, gt=0, help="Longest wait for the training result.")
    evaluate_timeout_s: float = setting(900.0, gt=0, help="Longest wait for the evaluator's decision.")
    rollout_timeout_s: float = setting(900.0, gt=0, help="Longest wait for the rollout to complete or roll back.")
    learning_rate: float = setting(3e-4, gt=0, help="The demo trainer's LoRA learning rate (see docs/demo.md for how it was chosen).")
    loss_type: str = setting("sigmoid,sft", help="The demo trainer's TRL loss types (DPO + an NLL term on the chosen text).")

    def __post_init__(self) -> None:
        check_fields(self)


def service_overlay(ds: DemoSettings) -> dict[str, str]:
    """PREFLOOP_* settings of the services the demo starts."""
    return {
        # Streams: fire on the demo's pair count, check often, no cooldown or drift firing in a short run.
        "PREFLOOP_STREAMS_TRIGGER_NEW_PAIRS": str(ds.trigger_pairs),
        "PREFLOOP_STREAMS_TRIGGER_MIN_PAIRS": str(ds.trigger_pairs),
        "PREFLOOP_STREAMS_TRIGGER_CHECK_S": "2",
        "PREFLOOP_STREAMS_TRIGGER_COOLDOWN_S": "3600",
        "PREFLOOP_STREAMS_DRIFT_INTERVAL_S": "30",
        # Trainer: one epoch of the snapshot; an NLL term on the chosen text so a 135M model picks up a habit
        # (an opener) it never produces from ~100 pairs (docs/demo.md has the measurements).
        "PREFLOOP_TRAINER_HELDOUT_FRACTION": str(ds.heldout_fraction),
        "PREFLOOP_TRAINER_LEARNING_RATE": str(ds.learning_rate),
        "PREFLOOP_TRAINER_LOSS_TYPE": ds.loss_type,
        "PREFLOOP_TRAINER_RETRY_BACKOFF_S": "5",
        # Evaluator: the demo's held-out set is small; shorter guardrail answers. The simulated users prefer
        # short answers, and a model that learns it answers in a third of the words: the guardrail's floor
        # on the length ratio (0.5 by default, against degenerate empty-ish answers) moves to 0.25.
        "PREFLOOP_EVALUATOR_MIN_PAIRS": str(ds.gate_min_pairs),
        "PREFLOOP_EVALUATOR_MIN_LENGTH_RATIO": "0.25",
        "PREFLOOP_EVALUATOR_MIN_SLICE_PAIRS": str(max(ds.gate_min_pairs, 10)),
        "PREFLOOP_EVALUATOR_MAX_NEW_TOKENS": str(ds.max_tokens),
        # Rollout: stages of seconds; CPU generation of a 135M model takes seconds per answer, so the
        # latency rule's limit is raised (both arms are equally slow; errors and satisfaction still count).
        "PREFLOOP_ROLLOUT_STAGES": ds.stages,
        "PREFLOOP_ROLLOUT_MIN_EVENTS": str(ds.stage_min_events),
        "PREFLOOP_ROLLOUT_MIN_FEEDBACK": str(ds.stage_min_feedback),
        "PREFLOOP_ROLLOUT_CHECK_INTERVAL_S": "3",
        "PREFLOOP_ROLLOUT_MAX_STAGE_S": str(max(240, int(ds.rollout_timeout_s // 2))),
        "PREFLOOP_ROLLOUT_MAX_P99_LATENCY_MS": "120000",
        # Gateway: short answers by default.
        "PREFLOOP_SERVE_DEFAULT_MAX_TOKENS": str(ds.max_tokens),
    }
