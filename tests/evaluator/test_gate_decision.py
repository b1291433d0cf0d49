"""`decide` (pure) names the first failing check with its numbers; guardrail text statistics."""

from __future__ import annotations

import math

import pytest

from evaluator.gate.decision import GateMetrics, decide
from evaluator.gate.evaluate import compute_metrics
from evaluator.gate.guardrails import Answer, GuardrailMetrics, TextStats, text_stats
from evaluator.gate.settings import GateSettings
from prefloop.errors import ConfigError
from schemas import PairSource, PreferencePair, PromotionDecision

GATE = GateSettings(min_pairs=50, min_slice_pairs=20, bootstrap_samples=500)
CLEAN = TextStats(answers=32, empty_rate=0.0, repeat_rate=0.05, mean_length=40.0)


def pair(i: int, source: str = "CHOICE", chosen_longer: bool = False, prompt: int | None = None) -> PreferencePair:
    chosen, rejected = ("a longer chosen reply", "short") if chosen_longer else ("short", "a longer rejected reply")
    return PreferencePair(prompt_id=f"p{i if prompt is None else prompt}", prompt=f"q{i}", chosen=f"{chosen} {i}",
                          rejected=f"{rejected} {i}", chosen_response_id=f"r{i}", chosen_model_version="v1.0",
                          rejected_model_version="v1.0", source=PairSource(source))


def metrics(diffs: list[float], pairs: list[PreferencePair], guard: GuardrailMetrics | None = None) -> GateMetrics:
    return compute_metrics(diffs, pairs, GATE, guard or GuardrailMetrics(CLEAN, CLEAN))


def test_too_few_pairs_is_inconclusive_with_the_counts():
    verdict = decide(metrics([1.0] * 12, [pair(i) for i in range(12)]), GATE)
    assert verdict.decision is PromotionDecision.REJECT and verdict.check == "inconclusive"
    assert verdict.reason == "inconclusive: 12 held-out pairs, need 50"


def test_a_clear_win_is_promoted_and_a_coin_flip_is_not():
    pairs = [pair(i) for i in range(100)]
    win = decide(metrics([1.0] * 80 + [-1.0] * 20, pairs), GATE)
    assert win.decision is PromotionDecision.PROMOTE and win.check == "passed"
    assert "win rate 0.800" in win.reason and "80 wins, 20 losses, 0 ties of 100 pairs" in win.reason
    even = decide(metrics([1.0, -1.0] * 50, pairs), GATE)
    assert even.check == "win" and even.reason.startswith("no significant win: win rate 0.500, lower bound 0.4")
    ties = decide(metrics([0.0] * 100, pairs), GATE)
    assert ties.check == "win" and ties.reason.startswith("no win: all 100 held-out pairs tie")


def test_min_improvement_raises_the_bar():
    pairs = [pair(i) for i in range(200)]
    m = metrics([1.0] * 124 + [-1.0] * 76, pairs)  # 0.62, lower bound about 0.56
    assert decide(m, GATE).decision is PromotionDecision.PROMOTE
    strict = decide(m, GATE.replace(min_improvement=0.1))
    assert strict.check == "win" and "is not above 0.60" in strict.reason


def test_a_regressing_source_with_enough_pairs_fails_but_a_small_one_does_not():
    pairs = [pair(i, "EDIT") for i in range(80)] + [pair(100 + i, "THUMBS") for i in range(25)]
    diffs = [1.0] * 80 + [-1.0] * 25
    verdict = decide(metrics(diffs, pairs), GATE)
    assert verdict.check == "source"
    assert verdict.reason == "source THUMBS regresses: win rate 0.000, upper bound 0.000 < 0.5 over 25 pairs"
    small = pairs[:80] + pairs[80:90]  # 10 THUMBS pairs: below min_slice_pairs, reported only
    assert decide(metrics(diffs[:90], small), GATE).decision is PromotionDecision.PROMOTE


def test_a_win_that_only_holds_where_chosen_is_longer_is_rejected_naming_length():
    pairs = [pair(i, chosen_longer=True) for i in range(75)] + [pair(100 + i) for i in range(25)]
    diffs = [1.0 + 0.01 * i for i in range(75)] + [-1.0] * 25
    verdict = decide(metrics(diffs, pairs), GATE)
    assert verdict.check == "length"
    assert verdict.reason.startswith("length: the win disappears on the 25 pairs whose chosen text is not longer "
                                     "(win rate 0.000, upper bound 0.000 < 0.5) while it holds overall (0.750)")


def test_guardrails_compare_the_candidate_with_the_baseline_within_margins():
    pairs = [pair(i) for i in range(100)]
    diffs = [1.0] * 100
    weak_base = TextStats(answers=32, empty_rate=0.30, repeat_rate=0.40, mean_length=10.0)
    as_weak = TextStats(answers=32, empty_rate=0.33, repeat_rate=0.45, mean_length=12.0)
    # A weak base model does not block a candidate that is no worse than it.
    assert decide(metrics(diffs, pairs, GuardrailMetrics(as_weak, weak_base)), GATE).decision is PromotionDecision.PROMOTE
    cases = {
        TextStats(32, 0.10, 0.05, 40.0): "guardrail: empty answers 10% vs baseline 0% (margin 5%)",
        TextStats(32, 0.0, 0.30, 40.0): "guardrail: repeated 3-grams 30% vs baseline 5% (margin 10%)",
        TextStats(32, 0.0, 0.05, 100.0): "guardrail: answer length ratio 2.50 (candidate 100.0 vs baseline 40.0 tokens) outside 0.5-2",
        TextStats(32, 0.0, 0.05, 10.0): "guardrail: answer length ratio 0.25 (candidate 10.0 vs baseline 40.0 tokens) outside 0.5-2",
    }
    for candidate, reason in cases.items():
        verdict = decide(metrics(diffs, pairs, GuardrailMetrics(candidate, CLEAN)), GATE)
        assert (verdict.check, verdict.reason) == ("guardrail", reason)
    silent_base = GuardrailMetrics(CLEAN, TextStats(32, 1.0, 0.0, 0.0))
    assert math.isnan(silent_base.length_ratio)
    assert decide(metrics(diffs, pairs, silent_base), GATE).decision is PromotionDecision.PROMOTE


def test_flat_metrics_carry_every_figure_and_no_nan():
    pairs = [pair(i, "EDIT") for i in range(60)]
    flat = metrics([1.0] * 40 + [-1.0] * 20, pairs).flat()
    for key in ("n", "wins", "losses", "ties", "win_rate", "win_rate_lower", "win_rate_upper", "p_value", "mean_diff",
                "mean_diff_lower", "source_EDIT_n", "source_EDIT_win_rate", "source_EDIT_lower", "source_EDIT_upper",
                "length_not_longer_n", "length_not_longer_win_rate", "guardrail_candidate_empty_rate",
                "guardrail_baseline_repeat_rate", "guardrail_length_ratio", "guardrail_prompts"):
        assert key in flat, key
    assert flat["n"] == 60 and flat["win_rate"] == pytest.approx(2 / 3)
    assert "length_correlation" not in flat  # every length difference is the same: NaN is left out
    assert all(isinstance(v, float) and not math.isnan(v) for v in flat.values())


def test_text_stats_count_empty_answers_repeated_token_trigrams_and_length():
    answers = [Answer("a b c a b c", (1, 2, 3, 1, 2, 3)), Answer("   ", (7,)), Answer("", ()), Answer("x y z w", (4, 5, 6, 7))]
    stats = text_stats(answers)
    assert stats.answers == 4 and stats.empty_rate == 0.5
    # 3-grams: (1,2,3) (2,3,1) (3,1,2) (1,2,3) -> one repeat; (4,5,6) (5,6,7) -> none; 1 of 6 repeated.
    assert stats.repeat_rate == pytest.approx(1 / 6)
    assert stats.mean_length == pytest.approx((6 + 1 + 0 + 4) / 4)


def test_settings_reject_out_of_range_values_in_one_line():
    with pytest.raises(ConfigError, match='"alpha" should be in \\(0, 0.5\\), got 0.7'):
        GateSettings(alpha=0.7)
    with pytest.raises(ConfigError, match='"device" should be one of auto, cpu, cuda'):
        GateSettings(device="tpu")
